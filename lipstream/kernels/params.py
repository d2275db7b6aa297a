"""The device renderer's per-launch parameter structs (rig.cuh, face.cuh, sample.cuh), filled from
the engine's own objects and constants so no number is written twice.

Each `ctypes.Structure` mirrors its C struct field for field (all 4-byte ints and floats: no
padding on any compiler); a kernel takes it by value, so a launch passes a pointer to its bytes.
"""

import ctypes
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipstream.engine import mouth as mouth_constants
from lipstream.engine.idle import LID_TRAVEL, EyeRegion
from lipstream.engine.mouth import MouthAssets
from lipstream.engine.rig import CHEEK_BLEND, MouthPose, RigBasis

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
OPEN_BOX_MARGIN_PX = 1.0  # render._open_box looks this far past the mouth's half width
MIN_HALF_WIDTH_PX = 1.0  # mouth.interior never divides by a half width below this
_F, _I = ctypes.c_float, ctypes.c_int32


class Affine(ctypes.Structure):
    _fields_ = [("m", _F * 6)]


class AffineD(ctypes.Structure):
    _fields_ = [("m", ctypes.c_double * 6)]


class FieldParams(ctypes.Structure):
    _fields_ = [("x0", _I), ("y0", _I), ("h", _I), ("w", _I), ("hc", _I), ("wc", _I),
                ("n_bins", _I), ("edge_origin", _F), ("corner_left", _F), ("corner_right", _F),
                ("cheek_blend", _F), ("open_centre", _F), ("open_half", _F), ("head", Affine),
                ("face", Affine)]


class MouthParams(ctypes.Structure):
    _fields_ = [("cavity", _F * 3), ("teeth", _F * 3), ("tongue", _F * 3), ("face_px", _F),
                ("edge_px", _F), ("teeth_height", _F), ("lower_teeth_height", _F),
                ("incisor_width", _F), ("teeth_span", _F), ("corner_fade", _F),
                ("seam_darkness", _F), ("wide_open", _F), ("centre", _F), ("half", _F),
                ("rounding", _F)]


class BlinkParams(ctypes.Structure):
    _fields_ = [("x0", _I), ("y0", _I), ("h", _I), ("w", _I), ("y_axis", _F * 2),
                ("lid_travel", _F), ("amount", _F), ("head", Affine)]


def affine(matrix: NDArray[Any] | None) -> Affine:
    """A 2x3 matrix (None: identity) as the kernels take it."""
    m = IDENTITY if matrix is None else matrix
    return Affine((_F * 6)(*np.asarray(m, np.float32).reshape(6)))


def affine_d(matrix: NDArray[Any]) -> AffineD:
    """A 2x3 matrix in double, for the whole-frame head move."""
    return AffineD((ctypes.c_double * 6)(*np.asarray(matrix, np.float64).reshape(6)))


def face_move(rig: RigBasis, head: NDArray[Any] | None) -> NDArray[Any]:
    """The head's move in face coordinates (u, v), as a 2x3 matrix: RigBasis.place's similarity
    (q = o + axes^T (u, v)), in float32 as it computes it. tests/test_kernels_render.py checks the
    two agree."""
    if head is None:
        return IDENTITY
    rot, shift = head[:, :2].astype(np.float32), head[:, 2].astype(np.float32)
    turn = rig.axes @ rot @ rig.axes.T
    offset = rig.axes @ (rot @ rig.origin + shift - rig.origin)
    return np.hstack([turn, offset[:, None]])


def field_params(rig: RigBasis, pose: MouthPose, head: NDArray[Any] | None) -> FieldParams:
    left, right = pose.corners_u
    h, w = rig.roi.shape
    return FieldParams(
        rig.roi.x0, rig.roi.y0, h, w, *rig.coarse_shape, len(rig.upper_edge),
        np.float32(rig.bin0 - 0.5), left, right, 2.0 * CHEEK_BLEND, (left + right) / 2,
        (right - left) / 2 + OPEN_BOX_MARGIN_PX, affine(head), affine(face_move(rig, head)))


def mouth_params(assets: MouthAssets, pose: MouthPose, rounding: float) -> MouthParams:
    left, right = pose.corners_u
    m = mouth_constants
    return MouthParams(
        (_F * 3)(*assets.cavity_rgb), (_F * 3)(*assets.teeth_rgb), (_F * 3)(*assets.tongue_rgb),
        assets.face_px, assets.edge_px, m.TEETH_HEIGHT, m.LOWER_TEETH_HEIGHT, m.INCISOR_WIDTH,
        m.TEETH_SPAN, m.CORNER_FADE, m.SEAM_DARKNESS, m.WIDE_OPEN, (left + right) / 2,
        max((right - left) / 2, MIN_HALF_WIDTH_PX), rounding)


def blink_params(region: EyeRegion, y_axis: NDArray[Any], amount: float,
                 head: NDArray[Any] | None) -> BlinkParams:
    h, w = region.roi.shape
    return BlinkParams(region.roi.x0, region.roi.y0, h, w, (_F * 2)(*y_axis), LID_TRAVEL, amount,
                       affine(head))


def eye_planes(region: EyeRegion) -> NDArray[Any]:
    """(5, h, w) float32: v, upper, lower, brow, lash, the order ls_blink_coords reads them."""
    return np.ascontiguousarray(np.stack([region.v, region.upper, region.lower, region.brow,
                                          region.lash]), dtype=np.float32)
