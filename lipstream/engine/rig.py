"""The rig: mouth controls -> a dense backward motion field over the lower face, per frame.

The bases come from `motionbasis.py` (once per photo): one set of smooth fields for the upper lip
and everything above it, one for the jaw side. Lips part along a line, which no single smooth
field can do, so each pixel chooses: where the upper field fetches upper-lip content (its source
lies above the photo's upper inner-lip edge) it takes the upper field; where the lower field
fetches lower-lip content it takes the lower one; where neither does, the lips are apart and the
mouth interior goes there. Deciding by where the content comes from keeps the painted interior
exactly flush with the warped lips.

Per frame: field = rest + sum_k c_k basis_k on a coarse grid (one small matmul for both sides, in
image and face axes), negated into a backward map, upsampled in one pass, then the per-pixel choice. Controls
are clamped to [0, 1] and offsets capped, so no input can tear the face.
"""

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from lipstream.engine.controls import N_CONTROLS
from lipstream.engine.faceframe import UPPER_INNER, FaceFrame
from lipstream.engine.motionbasis import LOWER_LINE, Roi, dense_fields, lower_face_roi, sparse_shapes

MAX_SHIFT = 0.25  # no pixel moves further than this (face heights), whatever the input
CORNER_SLOPE = 1.0  # px the lip edges cross per px past the mouth corners
CHEEK_BLEND = 1.5  # beyond the mouth corners, px of blend per px of distance: cheeks stretch smoothly


@dataclass(frozen=True)
class MouthPose:
    controls: np.ndarray  # (N_CONTROLS,) float32, clamped to [0, 1]
    corners_u: tuple[float, float]  # u of the moved inner mouth corners, px in the face frame


@dataclass(frozen=True)
class MouthField:
    coords: np.ndarray  # (h, w, 2) float32 absolute source coordinates for the region
    above: np.ndarray  # (h, w) px below the upper lip's inner edge (> 0 where the lips are apart)
    below: np.ndarray  # (h, w) px above the lower lip's inner edge (> 0 where the lips are apart)
    u: np.ndarray  # (h, w) float32 each pixel's u in the still face (head motion undone), px


class Placement(NamedTuple):
    """Each region pixel's place in the still photo for one head pose (what `RigBasis.place` gives)."""

    base: np.ndarray  # (2, h, w) float32 absolute source x and y planes before the mouth moves
    u: np.ndarray  # (h, w) float32 face-frame u, px
    v: np.ndarray  # (h, w) float32 face-frame v, px


@dataclass(frozen=True, eq=False)
class RigBasis:
    roi: Roi
    step: int  # coarse grid spacing, px
    # (N_CONTROLS + 1, hc * wc * 8) forward offsets, px, one contiguous row per shape (the last is the
    # rest shape); per coarse point: upper side (x, y), jaw side (x, y) in image axes, then the same
    # two in face axes (u, v), so one product makes all a frame needs
    basis: np.ndarray
    coarse_shape: tuple[int, int]  # (hc, wc)
    grid: np.ndarray  # (h, w, 2) float32 absolute pixel coordinates of the region
    grid_planes: np.ndarray  # (2, h, w) float32 the same, one contiguous plane per coordinate
    coarse_grid: np.ndarray  # (hc, wc, 2) float32 coarse-grid indices (to resample a coarse field)
    u: np.ndarray  # (h, w) float32 each pixel's position in the face frame, px
    v: np.ndarray
    axes: np.ndarray  # (2, 2) float32 rows: the face's x and y axes in image coordinates
    origin: np.ndarray  # (2,) float32 the face frame's origin (mouth centre), image px
    bin0: float  # u of the first lip-edge bin; bins are 1 px
    upper_edge: np.ndarray  # (n_bins,) float32 v of the photo's upper inner lip edge
    lower_edge: np.ndarray  # (n_bins,) float32 v of the photo's lower inner lip edge
    corners: np.ndarray  # (N_CONTROLS + 2, 2) u of the inner corners: position, then per shape
    face_px: float

    def clamp(self, controls: np.ndarray) -> np.ndarray:
        c = np.clip(np.asarray(controls, np.float32).reshape(N_CONTROLS), 0.0, 1.0)  # +-inf: 1 or 0
        c[np.isnan(c)] = 0.0  # (np.nan_to_num first did the same for ~4x the time of the rest)
        return c

    def pose(self, controls: np.ndarray) -> MouthPose:
        c = self.clamp(controls)
        left, right = np.concatenate([[1.0], c, [1.0]]) @ self.corners
        return MouthPose(c, (float(left), float(right)))

    def coarse_fields(self, pose: MouthPose) -> np.ndarray:
        """Backward offsets (8, hc, wc) px on the coarse grid, one plane each: the upper side's
        (x, y), the lower's, then both again in face axes (u, v).

        b(q) = -d(q): exact where a side moves rigidly, which is where its content is used (the
        jaw side over the lower lip and chin). A fixed-point step b = -d(q + b) was tried and
        dropped: across the strong stretch between the still nose and a dropped jaw it pulls
        the lower field back onto the lips, so lip pixels showed inside the open mouth.
        """
        weights = -np.concatenate([pose.controls, [1.0]]).astype(np.float32)  # negated: backward
        # (K + 1,) @ (K + 1, hc * wc * 8): one small matrix-vector product for everything
        coarse = (weights @ self.basis).reshape(*self.coarse_shape, 8)
        planes: np.ndarray = np.ascontiguousarray(np.moveaxis(coarse, -1, 0))  # whole planes: fast
        _cap(planes, MAX_SHIFT * self.face_px)
        return planes

    def field(self, pose: MouthPose, place: Placement | None = None) -> MouthField:
        """The region's source coordinates; `place` (from `place(head)`) folds in head motion."""
        base, u, v = place or self.place(None)
        h, w = self.roi.shape
        # b_up, b_lo, face_up, face_lo as 8 (h, w) planes: contiguous, since numpy on strided views
        # is several times slower. Each plane upsampled on its own: OpenCV's 8-channel resize and
        # split took 2.6x as long (its generic path; values within 2e-6 px of these).
        up_x, up_y, lo_x, lo_y, up_u, up_v, lo_u, lo_v = (
            cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR) for plane in self.coarse_fields(pose))
        above = self._past_edge(up_u, up_v, u, v, self.upper_edge)
        below = self._past_edge(lo_u, lo_v, u, v, self.lower_edge)
        np.negative(below, out=below)
        # 0: upper side, 1: lower side; the switch sits where the two edges are equally near
        side = np.subtract(above, below)
        side /= self._blend_px(pose, u)
        side += 0.5
        np.minimum(np.maximum(side, 0.0, out=side), 1.0, out=side)  # np.clip: the same, 1.5x slower
        coords = cv2.merge([_mix(up_x, lo_x, side, base[0]), _mix(up_y, lo_y, side, base[1])])
        return MouthField(coords, above, below, u)

    def _blend_px(self, pose: MouthPose, u: np.ndarray) -> np.ndarray:
        """Twice the blend width between the sides: a hard switch between the lips, widening
        past the corners where they are this frame (rounded lips pull them well inside the
        photo's), so the cheeks beside the mouth do not shear."""
        left, right = pose.corners_u
        beyond = np.maximum(left - u, u - right)
        beyond *= 2.0 * CHEEK_BLEND
        np.maximum(beyond, 0.1, out=beyond)
        return beyond

    def place(self, head: np.ndarray | None) -> Placement:
        """Where each pixel sits in the still photo before the mouth moves, for a head pose
        (2x3, frame -> photo; None: still). The same for every frame of that pose, so a renderer
        keeps it while the pose holds."""
        if head is None:
            return Placement(self.grid_planes, self.u, self.v)
        rot, shift = head[:, :2].astype(np.float32), head[:, 2].astype(np.float32)
        # the same similarity in face coordinates: q = o + axes^T (u, v)
        turn = self.axes @ rot @ self.axes.T
        offset = self.axes @ (rot @ self.origin + shift - self.origin)
        u, v = _affine_planes(np.stack([self.u, self.v]), turn, offset)
        return Placement(_affine_planes(self.grid_planes, rot, shift), u, v)

    def _past_edge(self, face_u: np.ndarray, face_v: np.ndarray, u: np.ndarray, v: np.ndarray,
                   edge: np.ndarray) -> np.ndarray:
        """v of each pixel's source minus the lip edge at the source's u (px, > 0 below the edge).

        face_u, face_v: (h, w) the pixel's backward offset in face axes; u, v: where the pixel sits.
        """
        source_bin = np.add(face_u, u)
        source_bin -= self.bin0 - 0.5  # +0.5: truncation below rounds to the nearest bin
        np.trunc(source_bin, out=source_bin)
        # The bin's edge, clamped to the table, as a one-row nearest-neighbour remap at whole
        # numbers: the same values as a cast, a clip and np.take, in half the time (np.take is slow).
        at = cv2.remap(edge[None], source_bin, np.zeros_like(source_bin), cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_REPLICATE)
        past = np.add(face_v, v)
        past -= at
        return past


def _planes(coords: np.ndarray) -> np.ndarray:
    """(h, w, 2) -> (2, h, w) contiguous: one plane per coordinate."""
    return np.ascontiguousarray(np.moveaxis(coords, -1, 0))


def _affine_planes(planes: np.ndarray, rot: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(2, h, w) float32 planes (x, y) mapped by rot (2, 2) and shift (2,), float32: the values of
    `apply_affine`, made on whole planes (it writes strided channels, several times slower)."""
    x, y = planes
    out = np.empty_like(planes)
    for k in range(2):
        np.multiply(x, rot[k, 0], out=out[k])
        out[k] += rot[k, 1] * y
        out[k] += shift[k]
    return out


def _mix(upper: np.ndarray, lower: np.ndarray, side: np.ndarray, base: np.ndarray) -> np.ndarray:
    """upper + side (lower - upper) + base, in lower's buffer (one coordinate plane)."""
    lower -= upper
    lower *= side
    lower += upper
    lower += base
    return lower


def _cap(coarse: np.ndarray, max_px: float) -> None:
    """Shorten each side's offsets longer than max_px, in place: a bound that holds whatever the
    controls. coarse (8, hc, wc) as `coarse_fields` makes it; the face axes are orthonormal, so
    the face-axes copy has the same length and takes the same factor."""
    axes_side_xy = coarse.reshape(2, 2, 2, *coarse.shape[1:])  # (image | face, upper | lower, x | y, hc, wc)
    length = np.hypot(axes_side_xy[0, :, 0], axes_side_xy[0, :, 1])  # (2, hc, wc): both sides at once
    np.maximum(length, 1e-6, out=length)
    np.divide(max_px, length, out=length)
    np.minimum(length, 1.0, out=length)
    axes_side_xy *= length[None, :, None]


def _edges(bin_u: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo's upper and lower inner-lip edges, v per u bin (px).

    Past the corners the two edges cross (the upper one drops, the lower one rises), so no
    pixel beside the mouth can count as "between the lips": the opening closes at the corners.
    """
    left, right = uv[UPPER_INNER[0], 0], uv[UPPER_INNER[-1], 0]
    beyond = np.maximum(np.maximum(left - bin_u, bin_u - right), 0.0)
    edges = []
    for ids, sign in ((UPPER_INNER, 1.0), (LOWER_LINE, -1.0)):
        pts = uv[list(ids)]
        order = np.argsort(pts[:, 0])
        line = np.interp(bin_u, pts[order, 0], pts[order, 1]) + sign * CORNER_SLOPE * beyond
        edges.append(line.astype(np.float32))
    return edges[0], edges[1]


def build_rig(lm: np.ndarray, frame: FaceFrame, size: int) -> RigBasis:
    lm = lm.astype(np.float64)
    step = max(2, size // 128)
    roi = lower_face_roi(lm, frame, size, step)
    shapes = sparse_shapes(lm, frame)
    upper, lower = dense_fields(lm, frame, shapes, roi, step)
    hc, wc = upper.shape[1:3]
    jj, ii = np.meshgrid(np.arange(wc, dtype=np.float32), np.arange(hc, dtype=np.float32))
    xs, ys = np.meshgrid(np.arange(roi.x0, roi.x1), np.arange(roi.y0, roi.y1))
    grid = np.stack([xs, ys], -1).astype(np.float32)
    pix = frame.to_face(grid.astype(np.float64)) * frame.face_px
    margin = MAX_SHIFT * frame.face_px + 2
    bin0 = float(pix[..., 0].min() - margin)
    bin_u = np.arange(bin0, pix[..., 0].max() + margin + 1)
    corner_ids = [UPPER_INNER[0], UPPER_INNER[-1]]
    corners_u = shapes.uv[corner_ids, 0]
    corners = np.vstack([corners_u[None], shapes.offsets_uv[:, corner_ids, 0]])
    upper_edge, lower_edge = _edges(bin_u, shapes.uv)
    axes = np.stack([frame.x_axis, frame.y_axis])
    turned = [side @ axes.T for side in (upper, lower)]  # the same offsets in face axes
    basis = np.concatenate([upper, lower, *turned], axis=-1).astype(np.float32).reshape(len(upper), -1)
    return RigBasis(
        roi=roi, step=step, basis=basis, coarse_shape=(hc, wc), grid=grid, grid_planes=_planes(grid),
        coarse_grid=np.stack([jj, ii], -1), u=pix[..., 0].astype(np.float32),
        v=pix[..., 1].astype(np.float32), axes=axes.astype(np.float32),
        origin=frame.origin.astype(np.float32), bin0=bin0, upper_edge=upper_edge,
        lower_edge=lower_edge,
        corners=corners.astype(np.float32), face_px=frame.face_px,
    )
