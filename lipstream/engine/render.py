"""Renderer: mouth controls + frame index -> one RGB frame of the avatar.

Stages per frame, each a method so `benchmarks/stages.py` can time them apart:
  head       the photo turned and shifted by the frame's head pose        `background`
             (reused while the quantised pose stays the same)
  rig        controls -> the lips' pose                                    `pose`
  field      pose (+ head pose) -> source coordinates over the lower face  `field`
  warp       photo sampled at those coordinates into the frame's region    `warp`
  composite  mouth interior painted between the lips                       `composite`
  blink      the eye regions, re-sampled with the lids lowered             `blink`
The mouth and eye regions sample the still photo directly, with the head motion folded into their
coordinates, so each frame touches the full image at most once (and only when the pose changed).
Everything else (landmarks, bases, masks, colours) was computed once in the Avatar.
A frame whose head pose, blink and mouth controls are those of the last one rendered is that
frame: an idle face (silence, the mouth at rest, the head between two pose steps) costs no render.
Each frame also says what it changed on its moved photo (`changes`), so that its I420 need not
be converted whole (`i420.py`).
"""

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from lipstream.engine.avatar import Avatar
from lipstream.engine.controls import LIP_ROUND
from lipstream.engine.i420 import Background, Boxes, Changes
from lipstream.engine.idle import FIRST_BLINK_S, HeadPose, IdleLife, blink_coords, head_pivot
from lipstream.engine.mouth import interior
from lipstream.engine.ranges import at_least_problem, choice_problem, refuse, span_problem
from lipstream.engine.rig import MouthField, MouthPose, Placement
from lipstream.kernels import KERNEL_DEVICES, Kernels, get_kernels

REFERENCE_SIZE = 512  # head_shift_px is given at this frame size and scales with it
# Controls this close to the last render's draw the same picture, at most one grey level off in a
# few pixels (measured: 1e-5 already moved 30-50 pixels by 2 levels, where the lips' seam and the
# mouth interior switch on). Smoothed controls settle this close within ~1 s of silence.
SAME_CONTROLS_TOLERANCE = 1e-6
# The first blink comes between FIRST_BLINK_S and the shortest interval: a shorter one was numpy's
# "high - low < 0" when the engine was built.
MIN_BLINK_INTERVAL_S = FIRST_BLINK_S


@dataclass(frozen=True, eq=False)
class Drawn:
    """What a rendered frame depends on, and the frame."""

    controls: np.ndarray  # (N_CONTROLS,)
    head: HeadPose | None
    blink: float
    image: np.ndarray  # (S, S, 3) uint8 RGB

    def shows(self, controls: np.ndarray, head: HeadPose | None, blink: float) -> bool:
        close = np.abs(controls - self.controls).max() <= SAME_CONTROLS_TOLERANCE
        return bool(close) and head == self.head and blink == self.blink


class Moved(NamedTuple):
    pose: HeadPose
    photo: Background  # the photo moved by the pose
    inverse: np.ndarray  # (2, 3) frame -> photo


@dataclass(frozen=True)
class RenderConfig:
    blink_interval_s: tuple[float, float] = (2.0, 6.0)  # time between blinks, drawn uniformly
    blink_ms: tuple[float, float] = (150.0, 250.0)  # length of one blink
    head_rotation_deg: float = 0.6  # largest head roll; 0 holds the head still
    head_shift_px: float = 1.5  # largest head shift at a 512 px frame; 0 holds it still
    device: str = "cpu"  # kernels: "cpu", "reference" (numpy) or "cuda" (NVIDIA GPU, lipstream[gpu])

    def __post_init__(self) -> None:
        """Refused here, not as numpy's or Python's error (a NaN) when the engine is built."""
        refuse([
            span_problem(self.blink_interval_s, MIN_BLINK_INTERVAL_S, "RenderConfig blink_interval_s",
                         f"(shortest, longest) seconds from {MIN_BLINK_INTERVAL_S:g}, "
                         f"e.g. {RenderConfig.blink_interval_s}"),
            span_problem(self.blink_ms, 0.0, "RenderConfig blink_ms",
                         f"(shortest, longest) milliseconds from 0, e.g. {RenderConfig.blink_ms}"),
            at_least_problem(self.head_rotation_deg, 0.0, "RenderConfig head_rotation_deg",
                             f"degrees from 0 (0: still), e.g. {RenderConfig.head_rotation_deg}"),
            at_least_problem(self.head_shift_px, 0.0, "RenderConfig head_shift_px",
                             f"pixels from 0 (0: still), e.g. {RenderConfig.head_shift_px}"),
            choice_problem(self.device, KERNEL_DEVICES, "RenderConfig device"),
        ])


class Renderer:
    def __init__(self, avatar: Avatar, config: RenderConfig | None = None, seed: int = 0) -> None:
        self.avatar = avatar
        self.config = config or RenderConfig()
        self.kernels: Kernels = get_kernels(self.config.device)
        self._rig = avatar.rig
        self._mouth_box = avatar.rig.roi.slices  # the region the mouth's warp and interior write
        self._eye_boxes = tuple(region.roi.slices for region in avatar.eyes.regions)
        self.idle = IdleLife(
            seed, self.config.blink_interval_s, self.config.blink_ms, self.config.head_rotation_deg,
            self.config.head_shift_px * avatar.size / REFERENCE_SIZE,
            head_pivot(avatar.landmarks, avatar.frame),
        )
        self._still = Background(avatar.image)  # the photo, when the head is held still
        self._moved: Moved | None = None  # the last head pose, its photo and its inverse
        self._placed: tuple[bytes, Placement] | None = None  # the last head matrix and its placement
        self._drawn: Drawn | None = None  # the last frame rendered
        self._posed: tuple[int, HeadPose | None] | None = None  # the last frame index and its head pose
        self.changes: Changes | None = None  # what the last frame drawn changed on its moved photo

    def render(self, controls: np.ndarray, index: int) -> np.ndarray:
        """(S, S, 3) uint8 RGB frame `index` with the mouth at `controls` ((5,) in [0, 1]); the
        very array last returned when the picture would be the same (do not write to it)."""
        head, blink = self._head_pose_or_none(index), self.idle.blink(index)
        if self._drawn is not None and self._drawn.shows(controls, head, blink):
            return self._drawn.image
        image = self.draw(controls, index)
        self._drawn = Drawn(np.array(controls, np.float32), head, blink, image)
        return image

    def _head_pose_or_none(self, index: int) -> HeadPose | None:
        """Frame index's head pose (None: held still), worked out once per frame: a frame asks
        for it several times, and each costs ~10 small numpy calls."""
        if self._posed is None or self._posed[0] != index:
            still = self.config.head_rotation_deg == 0 and self.config.head_shift_px == 0
            self._posed = (index, None if still else self.head_pose(index))
        return self._posed[1]

    def draw(self, controls: np.ndarray, index: int) -> np.ndarray:
        """A new (S, S, 3) uint8 RGB frame `index` with the mouth at `controls`, always drawn."""
        frame, head = self.background(index)
        pose = self.pose(controls)
        field = self.field(pose, head)
        self.warp(field.coords, frame)
        self.composite(pose, field, frame)
        self.blink(index, frame, head)
        self.changes = Changes(self._background(self._head_pose_or_none(index)), self._changed_boxes(index))
        return frame

    def _changed_boxes(self, index: int) -> Boxes:
        """The regions `draw` writes for frame index: the mouth's, and the eyes' when blinking."""
        if self.idle.blink(index) <= 0.0:
            return (self._mouth_box,)
        return (self._mouth_box, *self._eye_boxes)

    def background(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A fresh copy of the photo moved by frame index's head pose, and that pose's inverse
        (frame -> photo, None when the head is held still)."""
        pose = self._head_pose_or_none(index)
        if pose is None:
            return self._still.rgb.copy(), None
        moved = self._moved_by(pose)
        return moved.photo.rgb.copy(), moved.inverse

    def _background(self, pose: HeadPose | None) -> Background:
        """The photo moved by a head pose (None: held still)."""
        return self._still if pose is None else self._moved_by(pose).photo

    def _moved_by(self, pose: HeadPose) -> "Moved":
        """The photo moved by a head pose and the pose's inverse, kept while the (quantised) pose
        holds: both cost a whole-frame warp or a few dozen small numpy calls."""
        if self._moved is None or self._moved.pose != pose:
            photo = Background(move_head(self.avatar.image, pose, self.avatar.size))
            inverse = pose.inverse()
            inverse.flags.writeable = False  # handed to every frame of the pose
            self._moved = Moved(pose, photo, inverse)
        return self._moved

    def pose(self, controls: np.ndarray) -> MouthPose:
        return self._rig.pose(controls)

    def field(self, pose: MouthPose, head: np.ndarray | None = None) -> MouthField:
        return self._rig.field(pose, self._place(head))

    def _place(self, head: np.ndarray | None) -> Placement:
        """The region's placement for a head pose, kept while the (quantised) pose holds."""
        key = b"" if head is None else head.tobytes()
        if self._placed is None or self._placed[0] != key:
            self._placed = (key, self._rig.place(head))
        return self._placed[1]

    def warp(self, coords: np.ndarray, frame: np.ndarray) -> None:
        self.kernels.warp_region(self.avatar.image, coords, frame[self._mouth_box])

    def composite(self, pose: MouthPose, field: MouthField, frame: np.ndarray) -> None:
        """Paint the interior where the lips are apart (and the dark seam where they meet)."""
        box = _open_box(field, pose)
        if box is None:
            return
        colour, alpha = interior(self.avatar.mouth, field.u[box], field.above[box],
                                 field.below[box], pose.corners_u, float(pose.controls[LIP_ROUND]))
        region = frame[self._mouth_box][box]
        self.kernels.composite(region, colour, alpha)

    def blink_amount(self, index: int) -> float:
        return self.idle.blink(index)

    def blink(self, index: int, frame: np.ndarray, head: np.ndarray | None = None) -> None:
        amount = self.idle.blink(index)
        if amount <= 0.0:
            return
        eyes = self.avatar.eyes
        for region in eyes.regions:
            coords = blink_coords(region, eyes.y_axis, amount, head)
            self.kernels.warp_region(self.avatar.image, coords, frame[region.roi.slices])

    def head_pose(self, index: int) -> HeadPose:
        return self.idle.head_pose(index)


def move_head(image: np.ndarray, pose: HeadPose, size: int) -> np.ndarray:
    """The whole frame turned and shifted by the pose (what a test compares the photo against)."""
    return cv2.warpAffine(image, pose.matrix(), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _open_box(field: MouthField, pose: MouthPose) -> tuple[slice, slice] | None:
    """Rows and columns of the region holding every pixel the interior covers."""
    centre = (pose.corners_u[0] + pose.corners_u[1]) / 2
    half = (pose.corners_u[1] - pose.corners_u[0]) / 2 + 1.0
    shown = np.minimum(field.above, field.below) > -0.5
    shown |= np.abs(field.above - field.below) < 2.0  # the seam of closed lips
    shown &= np.abs(field.u - centre) < half
    rows = np.flatnonzero(shown.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(shown[rows[0] : rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
