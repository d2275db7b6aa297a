"""The per-pixel math of the kernels in plain numpy (float64), the yardstick for every device."""

from typing import Any

import numpy as np
from numpy.typing import NDArray


def bilinear(src: NDArray[Any], coords: NDArray[Any]) -> NDArray[Any]:
    """(h, w, C) float64: src sampled at coords (x, y), coordinates clamped to the image."""
    h, w = src.shape[:2]
    x = np.clip(coords[..., 0].astype(np.float64), 0, w - 1)
    y = np.clip(coords[..., 1].astype(np.float64), 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    img = src.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    sampled: NDArray[Any] = top * (1 - fy) + bottom * fy
    return sampled


class ReferenceKernels:
    name = "reference"

    def warp_region(self, src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None:
        out[...] = np.clip(np.round(bilinear(src, coords)), 0, 255).astype(np.uint8)

    def composite(self, out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None:
        a = alpha.astype(np.float64)[..., None]
        blended = out.astype(np.float64) * (1 - a) + colour.astype(np.float64) * a
        out[...] = np.clip(np.floor(blended + 0.5), 0, 255).astype(np.uint8)
