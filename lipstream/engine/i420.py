"""I420 (what the video encoders take) of frames drawn on a moved photo, converting only what changed.

A CPU frame is its head pose's moved photo with a few regions drawn over it (the mouth; the eyes in
a blink). Two frames on the same moved photo differ only inside the union of their regions, so a
frame's I420 is the last converted frame's on that photo with those regions converted again: byte
for byte what converting the whole frame gives (each region is widened to whole 2x2 chroma blocks),
for about a fifth of the work. The first frame on a new photo (a head-pose step) is converted whole.
"""

import threading
from dataclasses import dataclass

import cv2
import numpy as np

Boxes = tuple[tuple[slice, slice], ...]  # (rows, columns) of a frame


class Background:
    """The photo moved by one head pose (never written: frames are drawn on copies of it)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self._last: tuple[np.ndarray, Boxes] | None = None  # a frame's I420 on this photo, its boxes
        self._lock = threading.Lock()  # frames may be converted on more than one thread

    def i420_of(self, frame: np.ndarray, boxes: Boxes) -> np.ndarray:
        """(S * 3 // 2, S) I420 of an (S, S, 3) RGB frame that is this photo outside `boxes`."""
        with self._lock:
            if self._last is None:
                out = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
            else:
                base, done = self._last
                out = base.copy()
                for box in (*boxes, *(box for box in done if box not in boxes)):
                    _convert_into(out, frame, box)
            self._last = (out, boxes)  # only ever copied from, so the caller may keep it
            return out


@dataclass(frozen=True)
class Changes:
    """Where a frame differs from the moved photo it was drawn on: outside `boxes` it is that photo."""

    background: Background
    boxes: Boxes


def to_i420(rgb: np.ndarray, changes: Changes | None) -> np.ndarray:
    """(S * 3 // 2, S) I420 of an (S, S, 3) RGB picture, from its `changes` when known."""
    if changes is None:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    return changes.background.i420_of(rgb, changes.boxes)


def _convert_into(i420: np.ndarray, rgb: np.ndarray, box: tuple[slice, slice]) -> None:
    """Convert rgb[box], widened to even rows and columns, into the same place of a whole I420."""
    size = rgb.shape[0]
    rows, cols = box
    y0, x0 = rows.start & ~1, cols.start & ~1
    y1, x1 = min((rows.stop + 1) & ~1, size), min((cols.stop + 1) & ~1, size)
    h, w = y1 - y0, x1 - x0
    part = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2YUV_I420).reshape(-1)  # Y, then U, then V
    i420[y0:y1, x0:x1] = part[: h * w].reshape(h, w)
    chroma = i420[size:].reshape(2, size // 2, size // 2)  # U then V, each (S/2, S/2)
    chroma[:, y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = part[h * w :].reshape(2, h // 2, w // 2)
