"""The rig: mouth controls -> a dense backward motion field over the lower face.

Per photo (`build_rig`): landmark offsets per control (`shapes.py`) are spread into smooth dense
fields by Gaussian RBF interpolation, with zero-motion anchors on the upper face and the region's
border, and a window that takes them smoothly to zero at the border (no seam). There are two
sets: one for the upper lip and everything above it, one for the jaw, lower lip and chin. The lips
part along a line, which no single smooth field can do; per frame, each pixel takes the upper
field above the (moved) parting and the lower field below it, ramping across the gap, where the
mouth interior is painted over anyway.

Per frame (`RigBasis.pose`, `RigBasis.field`): field = rest + sum_k c_k basis_k on a coarse grid
(one small matmul), one fixed-point step to turn forward offsets into a backward map, upsampling,
then the per-pixel choice of upper or lower. All linear in the controls, which are clamped to
[0, 1] so no input can tear the face.
"""

from dataclasses import dataclass

import cv2
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
from lipstream.engine.shapes import CORNERS, REST, control_offsets, jaw_points

RBF_SIGMA = 0.09  # Gaussian width, face heights: wider than the landmark spacing on the jaw
RBF_RIDGE = 1e-3  # regularisation: near-duplicate landmarks share their offsets
EDGE_RAMP = 0.08  # face heights over which a field fades to zero at the region's border
BELOW_CHIN = 0.22  # the region reaches this far below the chin (face heights): the neck absorbs the jaw
MAX_SHIFT = 0.25  # no pixel moves further than this (face heights), whatever the input
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
class MouthPose:
    """The lips for one frame, in the face frame (px from the mouth centre, output positions)."""

    controls: np.ndarray  # (N_CONTROLS,) clamped
    upper_line: np.ndarray  # (n_bins,) v of the upper inner lip per u bin
    lower_line: np.ndarray  # (n_bins,) v of the lower inner lip per u bin (>= upper_line)
    corners_u: tuple[float, float]  # u of the inner mouth corners


@dataclass(frozen=True, eq=False)
class RigBasis:
    roi: Roi
    step: int  # coarse grid spacing, px
    upper: np.ndarray  # (N_CONTROLS + 1, hc, wc, 2) forward offsets, px; the last is the rest shape
    lower: np.ndarray  # same, for the jaw side
    grid: np.ndarray  # (h, w, 2) float32 absolute pixel coordinates of the region
    coarse_grid: np.ndarray  # (hc, wc, 2) float32 coarse-grid indices (for remap of the field)
    u_bin: np.ndarray  # (h, w) int32: each pixel's u bin
    v: np.ndarray  # (h, w) float32: each pixel's v, px in the face frame
    bin_u: np.ndarray  # (n_bins,) u of each bin, px
    upper_uv: np.ndarray  # (N_CONTROLS + 2, 11, 2): rest position (row 0) and per-shape offsets, px
    lower_uv: np.ndarray  # same for the lower inner lip
    face_px: float

    def clamp(self, controls: np.ndarray) -> np.ndarray:
        c = np.nan_to_num(np.asarray(controls, np.float32).reshape(N_CONTROLS), nan=0.0)
        return np.clip(c, 0.0, 1.0)

    def pose(self, controls: np.ndarray) -> MouthPose:
        c = self.clamp(controls)
        weights = np.concatenate([[1.0], c, [1.0]])  # position, controls, rest shape
        up = np.tensordot(weights, self.upper_uv, axes=1)  # (11, 2)
        lo = np.tensordot(weights, self.lower_uv, axes=1)
        upper_line = _line(self.bin_u, up)
        lower_line = _line(self.bin_u, lo)
        crossed = lower_line < upper_line  # pressed lips: they meet halfway
        mid = (upper_line + lower_line) / 2
        upper_line = np.where(crossed, mid, upper_line)
        lower_line = np.where(crossed, mid, lower_line)
        return MouthPose(c, upper_line, lower_line, (float(up[0, 0]), float(up[-1, 0])))

    def coarse_fields(self, pose: MouthPose) -> tuple[np.ndarray, np.ndarray]:
        """Backward offsets (hc, wc, 2) px for the upper and lower sides on the coarse grid."""
        weights = np.concatenate([pose.controls, [1.0]]).astype(np.float32)
        out = []
        for basis in (self.upper, self.lower):
            forward = np.tensordot(weights, basis, axes=1).astype(np.float32)
            backward = -forward
            # one fixed-point step of b(q) = -d(q + b(q)): a pixel samples where its content came from
            at = self.coarse_grid + backward / self.step
            backward = -cv2.remap(forward, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            out.append(_cap(backward, MAX_SHIFT * self.face_px))
        return out[0], out[1]

    def field(self, pose: MouthPose) -> np.ndarray:
        """(h, w, 2) float32 absolute source coordinates for each pixel of the region."""
        coarse_up, coarse_lo = self.coarse_fields(pose)
        h, w = self.roi.shape
        b_up = cv2.resize(coarse_up, (w, h), interpolation=cv2.INTER_LINEAR)
        b_lo = cv2.resize(coarse_lo, (w, h), interpolation=cv2.INTER_LINEAR)
        ramp = self.side_ramp(pose)
        b_lo -= b_up
        b_lo *= ramp[..., None]
        b_lo += b_up
        b_lo += self.grid
        return b_lo

    def side_ramp(self, pose: MouthPose) -> np.ndarray:
        """(h, w) float32: 0 above the upper lip, 1 below the lower lip, a ramp across the gap.

        Beyond the mouth corners the ramp widens, so the cheeks stretch instead of splitting.
        """
        left, right = pose.corners_u
        beyond = np.maximum(np.maximum(left - self.bin_u, self.bin_u - right), 0.0)
        width = np.maximum(pose.lower_line - pose.upper_line, np.maximum(1.0, 1.5 * beyond))
        top = pose.upper_line[self.u_bin]
        ramp = (self.v - top) / width[self.u_bin]
        return np.clip(ramp, 0.0, 1.0, out=ramp)


def _cap(offsets: np.ndarray, max_px: float) -> np.ndarray:
    """Shorten offsets longer than max_px: a bound that holds whatever the controls."""
    length = np.sqrt((offsets**2).sum(-1, keepdims=True))
    return offsets * np.minimum(1.0, max_px / np.maximum(length, 1e-6))


def _line(bin_u: np.ndarray, pts: np.ndarray) -> np.ndarray:
    order = np.argsort(pts[:, 0])
    return np.interp(bin_u, pts[order, 0], pts[order, 1]).astype(np.float32)


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


def _rbf_fields(points: np.ndarray, values: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian RBF through (n, 2) points with (n, m) values, evaluated on (..., 2) grid -> (..., m)."""
    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    k = kernel(points, points)
    weights = np.linalg.solve(k + RBF_RIDGE * np.eye(len(points)), values)
    flat = grid.reshape(-1, 2)
    return (kernel(flat, points) @ weights).reshape(*grid.shape[:-1], values.shape[1])


def _border_anchors(roi: Roi, spacing: float) -> np.ndarray:
    xs = np.arange(roi.x0, roi.x1 + 1, spacing)
    ys = np.arange(roi.y0, roi.y1 + 1, spacing)
    return np.vstack([np.c_[xs, np.full_like(xs, roi.y0)], np.c_[xs, np.full_like(xs, roi.y1)],
                      np.c_[np.full_like(ys, roi.x0), ys], np.c_[np.full_like(ys, roi.x1), ys]])


def _edge_window(shape: tuple[int, int], centres: np.ndarray, roi: Roi, ramp_px: float) -> np.ndarray:
    x, y = centres[..., 0], centres[..., 1]
    dist = np.minimum.reduce([x - roi.x0, roi.x1 - 1 - x, y - roi.y0, roi.y1 - 1 - y])
    t = np.clip(dist / ramp_px, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).reshape(shape)  # smoothstep: zero value and slope at the edge


def build_rig(lm: np.ndarray, frame: FaceFrame, size: int) -> RigBasis:
    lm = lm.astype(np.float64)
    step = max(2, size // 128)
    roi = lower_face_roi(lm, frame, size, step)
    hc, wc = roi.shape[0] // step, roi.shape[1] // step
    jj, ii = np.meshgrid(np.arange(wc), np.arange(hc))
    coarse_grid = np.stack([jj, ii], -1).astype(np.float32)
    centres = np.stack([roi.x0 + (jj + 0.5) * step - 0.5, roi.y0 + (ii + 0.5) * step - 0.5], -1)
    uv = frame.to_face(lm)
    offsets = control_offsets(uv)  # (K + 1, 478, 2) face heights
    px = frame.to_pixel_offsets(offsets)  # (K + 1, 478, 2) px, image axes
    upper_ids = np.array(UPPER_OUTER + UPPER_INNER)
    jaw, _ = jaw_points(uv)
    lower_ids = np.unique(np.concatenate([LOWER_OUTER, LOWER_INNER, CORNERS, CHIN_LINE, jaw]))
    still = np.setdiff1d(np.array(NOSE + STILL_UPPER), np.concatenate([upper_ids, lower_ids]))
    anchors = np.vstack([lm[still], _border_anchors(roi, 0.5 * RBF_SIGMA * frame.face_px)])
    window = _edge_window((hc, wc), centres, roi, EDGE_RAMP * frame.face_px)
    fields = []
    for ids in (upper_ids, lower_ids):
        points = np.vstack([lm[ids], anchors])
        values = np.zeros((len(points), (N_CONTROLS + 1) * 2))
        values[: len(ids)] = px[:, ids, :].transpose(1, 0, 2).reshape(len(ids), -1)
        dense = _rbf_fields(points, values, centres, RBF_SIGMA * frame.face_px)
        dense = dense.reshape(hc, wc, N_CONTROLS + 1, 2).transpose(2, 0, 1, 3) * window[None, ..., None]
        fields.append(dense.astype(np.float32))
    return _assemble(roi, step, fields, coarse_grid, uv, offsets, frame)


def _assemble(roi: Roi, step: int, fields: list[np.ndarray], coarse_grid: np.ndarray, uv: np.ndarray,
              offsets: np.ndarray, frame: FaceFrame) -> RigBasis:
    h, w = roi.shape
    xs, ys = np.meshgrid(np.arange(roi.x0, roi.x1, dtype=np.float32), np.arange(roi.y0, roi.y1, dtype=np.float32))
    grid = np.stack([xs, ys], -1)
    pix_uv = frame.to_face(grid.astype(np.float64)) * frame.face_px  # (h, w, 2) px in the face frame
    u_min = float(pix_uv[..., 0].min())
    u_bin = np.round(pix_uv[..., 0] - u_min).astype(np.int32)
    bin_u = (np.arange(int(u_bin.max()) + 1) + u_min).astype(np.float32)
    lines = []
    for ids in (UPPER_INNER, LOWER_LINE):
        rest_pos = uv[list(ids)]
        shapes = offsets[:, list(ids)]
        # rows: position, the N_CONTROLS shapes, then the rest shape (matches MouthPose weights)
        lines.append(np.concatenate([rest_pos[None], shapes], 0).astype(np.float32) * frame.face_px)
    return RigBasis(
        roi=roi, step=step, upper=fields[0], lower=fields[1], grid=grid, coarse_grid=coarse_grid,
        u_bin=u_bin, v=pix_uv[..., 1].astype(np.float32), bin_u=bin_u,
        upper_uv=lines[0], lower_uv=lines[1], face_px=frame.face_px,
    )


__all__ = ["REST", "MouthPose", "RigBasis", "Roi", "build_rig"]
