"""CPU kernels: OpenCV remap on the region only, numpy for the blend, both in float32 and into the
caller's buffer (no full-size temporaries)."""

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

# OpenCV splits each call across a helper thread per core. A server runs many sessions, already
# one per core or more, so the split only adds hand-offs: on this work it cost ~8% more CPU per
# frame (benchmarks/stages.py --cv-threads 2, docs/profile.md). Process-wide, as OpenCV's setting is.
OPENCV_THREADS = 1


class CpuKernels:
    name = "cpu"

    def __init__(self) -> None:
        cv2.setNumThreads(OPENCV_THREADS)

    def warp_region(self, src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None:
        # OpenCV interpolates with 5-bit fixed-point weights: within 1-2 levels of exact bilinear.
        # It writes straight into `out` (a view of the frame) when it can address it in place.
        warped = cv2.remap(src, coords, None, cv2.INTER_LINEAR, dst=out,  # type: ignore[call-overload]
                           borderMode=cv2.BORDER_REPLICATE)
        if warped is not out:
            out[...] = warped

    def composite(self, out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None:
        # out + (colour - out) * alpha: the same blend as the reference, with one temporary
        blended = np.subtract(colour, out, dtype=np.float32)
        blended *= alpha[..., None]
        blended += out
        blended += 0.5
        np.clip(blended, 0, 255, out=blended)
        out[...] = blended  # truncates: with the + 0.5 above, rounds to nearest
