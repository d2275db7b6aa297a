"""Per-photo motion basis: sparse landmark offsets -> smooth dense fields, computed once.

Offsets are spread by thin-plate-spline interpolation (smooth, exact at the landmarks, no width
to tune against the landmark spacing), with zero-motion anchors on the still upper face and along
the region's border, then multiplied by a window that reaches zero with zero slope at the border,
so the warped region meets the untouched frame without a seam. Two sets are built: one for the
upper lip and above, one for the jaw side (lower lip, chin, jaw line).
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.controls import N_CONTROLS
from lipstream.engine.faceframe import (
    CHIN_LINE,
    LOWER_INNER,
    LOWER_OUTER,
    NOSE,
    NOSE_TIP,
    STILL_UPPER,
    UPPER_INNER,
    UPPER_OUTER,
    FaceFrame,
)
from lipstream.engine.shapes import CORNERS, cheek_ring, control_offsets, jaw_points

TPS_RIDGE = 1e-6  # regularisation (face heights^2): near-duplicate landmarks share their offsets
EDGE_RAMP = 0.08  # face heights over which a field fades to zero at the region's border
BELOW_CHIN = 0.22  # the region reaches this far below the chin (face heights): the neck absorbs the jaw
ANCHOR_SPACING = 0.05  # face heights between zero anchors on the border
LOWER_LINE = (UPPER_INNER[0], *LOWER_INNER, UPPER_INNER[-1])


@dataclass(frozen=True)
class Roi:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class SparseShapes:
    """Landmark offsets per shape, and the photo's inner-lip lines, in the face frame (px)."""

    offsets_px: np.ndarray  # (N_CONTROLS + 1, 478, 2) image axes; the last is the rest shape
    offsets_uv: np.ndarray  # (N_CONTROLS + 1, 478, 2) face axes, px
    uv: np.ndarray  # (478, 2) landmark positions in the face frame, px


def sparse_shapes(lm: np.ndarray, frame: FaceFrame) -> SparseShapes:
    uv = frame.to_face(lm)
    offsets = control_offsets(uv)
    return SparseShapes(frame.to_pixel_offsets(offsets), offsets * frame.face_px, uv * frame.face_px)


def lower_face_roi(lm: np.ndarray, frame: FaceFrame, size: int, step: int) -> Roi:
    """Axis-aligned box from the nose tip to below the chin, across the jaw; a multiple of step."""
    jaw, _ = jaw_points(frame.to_face(lm))
    pts = np.vstack([lm[list(jaw)], lm[list(CHIN_LINE)] + frame.y_axis * BELOW_CHIN * frame.face_px])
    margin = 0.06 * frame.face_px
    x0 = int(max(pts[:, 0].min() - margin, 0))
    x1 = int(min(pts[:, 0].max() + margin, size))
    y0 = int(max(lm[NOSE_TIP, 1], 0))
    y1 = int(min(pts[:, 1].max(), size))
    w, h = (x1 - x0) // step * step, (y1 - y0) // step * step
    return Roi(x0, y0, x0 + w, y0 + h)


def _tps(points: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Thin-plate spline through (n, 2) points with (n, m) values, evaluated at (k, 2) -> (k, m)."""
    def phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        out: np.ndarray = 0.5 * r2 * np.log(np.maximum(r2, 1e-12))  # r^2 log r
        return out

    n = len(points)
    affine = np.hstack([np.ones((n, 1)), points])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = phi(points, points) + TPS_RIDGE * np.eye(n)
    system[:n, n:] = affine
    system[n:, :n] = affine.T
    rhs = np.vstack([values, np.zeros((3, values.shape[1]))])
    coef = np.linalg.solve(system, rhs)
    values_at: np.ndarray = phi(at, points) @ coef[:n] + np.hstack([np.ones((len(at), 1)), at]) @ coef[n:]
    return values_at


def _border_anchors(roi: Roi, spacing: float) -> np.ndarray:
    xs = np.linspace(roi.x0, roi.x1, max(int((roi.x1 - roi.x0) / spacing), 2))
    ys = np.linspace(roi.y0, roi.y1, max(int((roi.y1 - roi.y0) / spacing), 2))[1:-1]
    return np.vstack([np.c_[xs, np.full_like(xs, roi.y0)], np.c_[xs, np.full_like(xs, roi.y1)],
                      np.c_[np.full_like(ys, roi.x0), ys], np.c_[np.full_like(ys, roi.x1), ys]])


def _edge_window(centres: np.ndarray, roi: Roi, ramp_px: float) -> np.ndarray:
    x, y = centres[..., 0], centres[..., 1]
    dist = np.minimum.reduce([x - roi.x0, roi.x1 - 1 - x, y - roi.y0, roi.y1 - 1 - y])
    t = np.clip(dist / ramp_px, 0.0, 1.0)
    window: np.ndarray = t * t * (3 - 2 * t)  # smoothstep: zero value and zero slope at the edge
    return window


def dense_fields(lm: np.ndarray, frame: FaceFrame, shapes: SparseShapes, roi: Roi,
                 step: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward offsets (N_CONTROLS + 1, hc, wc, 2) float32 px on the coarse grid: upper and lower sets.

    Coarse sample (i, j) sits at pixel (x0 + (j + 0.5) step - 0.5, y0 + (i + 0.5) step - 0.5), so
    a resize by `step` lands each sample on its pixel.
    """
    hc, wc = roi.shape[0] // step, roi.shape[1] // step
    jj, ii = np.meshgrid(np.arange(wc), np.arange(hc))
    centres = np.stack([roi.x0 + (jj + 0.5) * step - 0.5, roi.y0 + (ii + 0.5) * step - 0.5], -1)
    upper_ids = np.array(UPPER_OUTER + UPPER_INNER + cheek_ring())
    jaw, _ = jaw_points(frame.to_face(lm))
    lower_ids = np.unique(np.concatenate([LOWER_OUTER, LOWER_INNER, CORNERS, cheek_ring(), CHIN_LINE, jaw]))
    still = np.setdiff1d(np.array(NOSE + STILL_UPPER), np.concatenate([upper_ids, lower_ids]))
    anchors = np.vstack([lm[still], _border_anchors(roi, ANCHOR_SPACING * frame.face_px)])
    window = _edge_window(centres, roi, EDGE_RAMP * frame.face_px)[None, ..., None]
    scale = frame.face_px  # solve in face heights: a well-conditioned system
    lower_lip = np.array(LOWER_INNER + LOWER_OUTER)
    upper_lip = np.array(UPPER_INNER[1:-1] + UPPER_OUTER[1:-1])
    out = []
    for ids, ghosts, edge in ((upper_ids, lower_lip, UPPER_INNER), (lower_ids, upper_lip, LOWER_LINE)):
        # Each side's field continues across the parting as its own lip edge moves, so it cannot
        # fold back over its lip where the other side's lip sits in the photo.
        moved = np.concatenate([shapes.offsets_px[:, ids], _follow_edge(shapes, edge, ghosts)], axis=1)
        points = np.vstack([lm[ids], lm[ghosts], anchors]) / scale
        values = np.zeros((len(points), (N_CONTROLS + 1) * 2))
        values[: moved.shape[1]] = moved.transpose(1, 0, 2).reshape(moved.shape[1], -1)
        dense = _tps(points, values, centres.reshape(-1, 2) / scale)
        dense = dense.reshape(hc, wc, N_CONTROLS + 1, 2).transpose(2, 0, 1, 3) * window
        out.append(dense.astype(np.float32))
    return out[0], out[1]


def _follow_edge(shapes: SparseShapes, edge: tuple[int, ...], ghosts: np.ndarray) -> np.ndarray:
    """(N_CONTROLS + 1, len(ghosts), 2) offsets of the lip edge point at each ghost's u."""
    order = np.array(edge)[np.argsort(shapes.uv[list(edge), 0])]
    u_edge, u_ghost = shapes.uv[order, 0], shapes.uv[ghosts, 0]
    out = np.empty((shapes.offsets_px.shape[0], len(ghosts), 2))
    for k in range(out.shape[0]):
        for c in range(2):
            out[k, :, c] = np.interp(u_ghost, u_edge, shapes.offsets_px[k, order, c])
    return out
