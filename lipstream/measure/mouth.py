"""Is the avatar's mouth open in a received frame? A cheap detector, and FaceMesh to check it.

The server renders a known avatar, so its mouth box is known from the avatar's landmarks. An
opening mouth shows teeth and then the dark interior between the lips, so the detector counts
the pixels of that box that differ from the avatar at rest; idle head motion (a pixel or two)
is absorbed by taking the best match over small shifts. The threshold is calibrated on frames
rendered here: half the score of a mouth opened to `OPEN_JAW`. FaceMesh's inner-lip gap, with a
threshold calibrated the same way, is the independent check.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.engine.avatar import Avatar
from lipstream.engine.controls import JAW_OPEN, N_CONTROLS
from lipstream.engine.faceframe import CHIN, FOREHEAD
from lipstream.engine.facemesh import landmarks_of_largest
from lipstream.engine.render import Renderer

MOUTH_CORNERS = (61, 291)  # FaceMesh outer lip corners
UPPER_OUTER_LIP, LOWER_OUTER_LIP = 0, 17
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
JAW_DROP_ROOM = 0.3  # box extends below the lower lip by this much of the mouth width
CORNER_TRIM = 0.1  # and leaves out this much of the width at each corner (cheeks move with idle life)
REFERENCE_SIZE = 512  # frame side the pixel constants below are given at
SHIFT_PX = 4  # idle head motion the match absorbs (at most ~1.5 px shift and 0.6 deg roll at 512 px)
CHANGED_LEVEL = 20  # grey levels: a pixel counts as changed beyond this (VP8 noise stays under it)
OPEN_JAW = 0.2  # jaw_open that counts as "open"; the thresholds sit half-way to it from rest
CALIBRATION_FRAMES = (0, 37, 80, 123)  # idle poses the calibration renders, spread over ~5 s


@dataclass(frozen=True)
class MouthBox:
    top: int
    bottom: int
    left: int
    right: int

    def shifted(self, dy: int, dx: int) -> tuple[slice, slice]:
        return slice(self.top + dy, self.bottom + dy), slice(self.left + dx, self.right + dx)


def mouth_box(landmarks: np.ndarray) -> MouthBox:
    """From the lips' outer contour at rest down to where the open jaw reaches, corners trimmed."""
    left, right = landmarks[MOUTH_CORNERS[0], 0], landmarks[MOUTH_CORNERS[1], 0]
    width = right - left
    bottom = landmarks[LOWER_OUTER_LIP, 1] + JAW_DROP_ROOM * width
    return MouthBox(int(landmarks[UPPER_OUTER_LIP, 1]), int(bottom),
                    int(left + CORNER_TRIM * width), int(right - CORNER_TRIM * width))


def jaw_controls(jaw: float) -> np.ndarray:
    controls = np.zeros(N_CONTROLS, np.float32)
    controls[JAW_OPEN] = jaw
    return controls


def _resized(rgb: np.ndarray, size: int) -> np.ndarray:
    return rgb if rgb.shape[0] == size else cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _grey(rgb: np.ndarray, size: int) -> np.ndarray:
    return cv2.cvtColor(_resized(rgb, size), cv2.COLOR_RGB2GRAY).astype(np.int16)


class MouthOpenDetector:
    """Works on frames of side `size` (the received ones are resized to it; smaller is cheaper)."""

    def __init__(self, avatar: Avatar, size: int | None = None) -> None:
        self.size = size or avatar.size
        self.box = mouth_box(avatar.landmarks * (self.size / avatar.size))
        reach = max(1, round(SHIFT_PX * self.size / REFERENCE_SIZE))
        self._shifts = range(-reach, reach + 1)
        renderer = Renderer(avatar)
        self._rest = _grey(renderer.render(jaw_controls(0.0), 0), self.size)[self.box.shifted(0, 0)]
        opened = [_resized(renderer.render(jaw_controls(OPEN_JAW), i), self.size) for i in CALIBRATION_FRAMES]
        self.threshold = float(np.median([self.score(image) for image in opened])) / 2
        self.gap_threshold = float(np.median([lip_gap(image) for image in opened])) / 2

    def score(self, rgb: np.ndarray) -> float:
        """Percent of the mouth box that differs from the mouth at rest (best over small shifts)."""
        grey = _grey(rgb, self.size)
        return min(float((np.abs(grey[self.box.shifted(dy, dx)] - self._rest) > CHANGED_LEVEL).mean() * 100)
                   for dy in self._shifts for dx in self._shifts)

    def is_open(self, rgb: np.ndarray) -> bool:
        return self.score(rgb) > self.threshold

    def facemesh_open(self, rgb: np.ndarray) -> bool | None:
        """FaceMesh's verdict on the same frame; None if it finds no face."""
        gap = lip_gap(_resized(rgb, self.size))
        return None if np.isnan(gap) else gap > self.gap_threshold


def lip_gap(rgb: np.ndarray) -> float:
    """Inner-lip gap over face height, by FaceMesh; nan if it finds no face."""
    lm = landmarks_of_largest(rgb)
    if lm is None:
        return float("nan")
    face_height = np.linalg.norm(lm[CHIN] - lm[FOREHEAD])
    return float(np.linalg.norm(lm[LOWER_INNER_LIP] - lm[UPPER_INNER_LIP]) / face_height)
