"""CPU kernels: OpenCV remap on the region only, numpy for the blend."""

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray


class CpuKernels:
    name = "cpu"

    def warp_region(self, src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None:
        # OpenCV interpolates with 5-bit fixed-point weights: within 1-2 levels of exact bilinear
        out[...] = cv2.remap(src, coords, None, cv2.INTER_LINEAR,  # type: ignore[call-overload]
                             borderMode=cv2.BORDER_REPLICATE)

    def composite(self, out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None:
        a = alpha[..., None]
        blended = out * (1.0 - a) + colour * a
        out[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
