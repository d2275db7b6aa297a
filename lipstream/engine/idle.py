"""Idle life: blinks and slight head motion, a deterministic function of (seed, frame index).

Blink: the upper lid slides down over the eye. In the face frame each eye column has a brow
line B, the upper lid U and the lower lid L; with the lid edge at C = U + amount (L - U), output
rows in [B, C) take the skin of [B, U) stretched down, rows below C stay (the eyeball does not
move, the lid covers it). Exact, cheap, and only on two small eye regions.
Head motion: a small rotation and shift of the whole frame, sums of slow sinusoids.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from lipstream.engine.constants import VIDEO_FPS
from lipstream.engine.faceframe import CHIN, LEFT_EYE, RIGHT_EYE, FaceFrame, apply_affine
from lipstream.engine.motionbasis import Roi

BROW_SPAN = 1.25  # lid skin above the upper lid that stretches, in units of the eye's opening
LASH_FRACTION = 0.4  # thickness of the dark lash line, in units of the eye's opening
LID_TRAVEL = 0.97
HEAD_ANGLE_STEP_DEG = 0.05  # ~0.2 px at 250 px from the pivot
HEAD_SHIFT_STEP_PX = 0.2  # a closed lid stops just short of the lower lid's line
FIRST_BLINK_S = 0.5  # the earliest first blink; it comes by the shortest blink interval


@dataclass(frozen=True, eq=False)
class EyeRegion:
    roi: Roi
    grid: np.ndarray  # (h, w, 2) float32 absolute pixel coordinates
    v: np.ndarray  # (h, w) float32 px in the face frame
    upper: np.ndarray  # (h, w) float32 v of the upper lid above each pixel
    lower: np.ndarray  # (h, w) float32 v of the lower lid
    brow: np.ndarray  # (h, w) float32 v where the stretching skin starts
    lash: np.ndarray  # (h, w) float32 px of lash line above the upper lid's edge


@dataclass(frozen=True)
class EyeAssets:
    regions: tuple[EyeRegion, ...]
    y_axis: np.ndarray  # (2,) the face's downward axis, image coordinates


def _lid_line(uv: np.ndarray, ids: tuple[int, ...], corners: tuple[int, ...], u: np.ndarray) -> np.ndarray:
    pts = uv[list(ids) + list(corners)]
    order = np.argsort(pts[:, 0])
    return np.interp(u, pts[order, 0], pts[order, 1])


def _eye_region(lm: np.ndarray, frame: FaceFrame, eye: tuple[tuple[int, ...], ...], size: int) -> EyeRegion:
    corners, upper_ids, lower_ids = eye
    uv = frame.to_face(lm) * frame.face_px  # px in the face frame
    opening = float(np.max(uv[list(lower_ids), 1]) - np.min(uv[list(upper_ids), 1]))
    ids = list(corners + upper_ids + lower_ids)
    margin = 0.25 * opening + 2
    top = lm[ids] - frame.y_axis * (BROW_SPAN + 0.3) * opening
    pts = np.vstack([lm[ids], top])
    x0, y0 = np.maximum(np.floor(pts.min(0) - margin), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + margin), size).astype(int)
    roi = Roi(int(x0), int(y0), int(x1), int(y1))
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    grid = np.stack([xs, ys], -1)
    puv = frame.to_face(grid.astype(np.float64)) * frame.face_px
    upper = _lid_line(uv, upper_ids, corners, puv[..., 0])
    lower = _lid_line(uv, lower_ids, corners, puv[..., 0])
    lower = np.maximum(lower, upper)
    fraction = np.sqrt(np.clip((lower - upper) / opening, 0, 1))  # 1 mid-eye, 0 at the corners
    brow = upper - BROW_SPAN * opening * fraction
    lash = LASH_FRACTION * opening * fraction
    f32 = np.float32
    return EyeRegion(roi, grid, puv[..., 1].astype(f32), upper.astype(f32), lower.astype(f32),
                     brow.astype(f32), lash.astype(f32))


def analyse_eyes(lm: np.ndarray, frame: FaceFrame, size: int) -> EyeAssets:
    regions = tuple(_eye_region(lm.astype(np.float64), frame, eye, size) for eye in (RIGHT_EYE, LEFT_EYE))
    return EyeAssets(regions, frame.y_axis.astype(np.float32))


def blink_coords(region: EyeRegion, y_axis: np.ndarray, amount: float,
                 head: np.ndarray | None = None) -> np.ndarray:
    """(h, w, 2) float32 source coordinates for the eye region with the lid `amount` closed.

    The lid's skin [B, U - lash) is stretched over [B, C - lash); the lash line [U - lash, U)
    moves down unstretched to end at the lid edge C, so a closed eye is skin with a thin dark edge.
    """
    lid = region.upper + LID_TRAVEL * amount * (region.lower - region.upper)  # the lid edge, C
    grid = region.grid if head is None else apply_affine(region.grid, head)
    # v of the still face under each pixel (head motion is a tiny turn: its effect on u is negligible)
    v = region.v if head is None else region.v + (grid - region.grid) @ y_axis
    brow, lash = region.brow, region.lash
    skin_end = region.upper - lash
    stretch = (skin_end - brow) / np.maximum(lid - lash - brow, 1e-3)
    source_v = np.where(v < lid - lash, brow + (v - brow) * stretch, v - (lid - region.upper))
    inside = (v >= brow) & (v < lid)
    shift = np.where(inside, source_v - v, 0.0).astype(np.float32)
    coords: np.ndarray = grid + shift[..., None] * y_axis
    return coords


@dataclass(frozen=True)
class HeadPose:
    angle_deg: float
    shift_px: tuple[float, float]
    centre_px: tuple[float, float]

    def matrix(self) -> np.ndarray:
        """2x3 float64: crop pixels -> moved frame pixels."""
        a = np.deg2rad(self.angle_deg)
        c, s = np.cos(a), np.sin(a)
        cx, cy = self.centre_px
        rot = np.array([[c, s], [-s, c]])  # positive angle turns counter-clockwise on screen
        offset = np.array([cx, cy]) - rot @ np.array([cx, cy]) + np.array(self.shift_px)
        return np.hstack([rot, offset[:, None]])

    def inverse(self) -> np.ndarray:
        """2x3 float64: moved frame pixels -> crop pixels (where each output pixel samples)."""
        inverse: np.ndarray = cv2.invertAffineTransform(self.matrix())
        return inverse


class IdleLife:
    """Blink amounts and head poses for frame indices, from a seed."""

    def __init__(self, seed: int, blink_interval_s: tuple[float, float], blink_ms: tuple[float, float],
                 rotation_deg: float, shift_px: float, pivot_px: tuple[float, float]) -> None:
        self._rng = np.random.default_rng([seed, 0x1D1E])
        self._interval_frames = (blink_interval_s[0] * VIDEO_FPS, blink_interval_s[1] * VIDEO_FPS)
        self._blink_frames = (blink_ms[0] * VIDEO_FPS / 1000, blink_ms[1] * VIDEO_FPS / 1000)
        self._blinks: list[tuple[int, int]] = []  # (start frame, length in frames), generated lazily
        self._next_start = float(self._rng.uniform(FIRST_BLINK_S * VIDEO_FPS, self._interval_frames[0]))
        motion = np.random.default_rng([seed, 0x4EAD])
        # three slow sinusoids per degree of freedom (angle, x, y): periods ~4-15 s
        self._freq_hz = motion.uniform(0.065, 0.25, size=(3, 3))
        self._phase = motion.uniform(0, 2 * np.pi, size=(3, 3))
        self._weight = motion.uniform(0.5, 1.0, size=(3, 3))
        self._weight /= self._weight.sum(axis=1, keepdims=True)  # each sum stays within +-1
        self._amplitude = np.array([rotation_deg, shift_px, shift_px])
        self._pivot = pivot_px

    def blink(self, index: int) -> float:
        """How closed the lids are at frame index: 0 open, 1 shut."""
        while self._next_start <= index + 1:
            start = int(round(self._next_start))
            length = max(3, int(round(self._rng.uniform(*self._blink_frames))) + 1)
            self._blinks.append((start, length))
            self._next_start += self._rng.uniform(*self._interval_frames)
        for start, length in reversed(self._blinks):
            if start <= index < start + length:
                return _blink_profile(index - start, length)
            if start + length <= index:
                break
        return 0.0

    def head_pose(self, index: int) -> HeadPose:
        t = index / VIDEO_FPS
        wave = (self._weight * np.sin(2 * np.pi * self._freq_hz * t + self._phase)).sum(axis=1)
        angle, dx, dy = wave * self._amplitude
        # Quantised, so that neighbouring frames share a pose and the moved photo can be reused;
        # a step moves no face pixel by more than ~0.25 px, too little to see.
        angle = round(angle / HEAD_ANGLE_STEP_DEG) * HEAD_ANGLE_STEP_DEG
        dx, dy = (round(d / HEAD_SHIFT_STEP_PX) * HEAD_SHIFT_STEP_PX for d in (dx, dy))
        return HeadPose(float(angle), (float(dx), float(dy)), self._pivot)


def _blink_profile(k: int, length: int) -> float:
    """Lids close fast (about a third of the blink) and open more slowly."""
    closing = max(1, round(length * 0.35))
    if k < closing:
        return (k + 1) / closing
    return max(0.0, 1.0 - (k - closing + 1) / (length - closing + 1))


def head_pivot(lm: np.ndarray, frame: FaceFrame) -> tuple[float, float]:
    """The head turns about the top of the neck, a little below the chin."""
    pivot = lm[CHIN] + frame.y_axis * 0.15 * frame.face_px
    return float(pivot[0]), float(pivot[1])
