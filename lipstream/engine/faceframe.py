"""The face's own frame and the FaceMesh landmark groups the rig moves.

Axes come from the landmarks: x along the eye line (image left to right), y perpendicular to it
(downwards), so offsets written in this frame follow head tilt. Lengths are in units of the face
height (forehead landmark 10 to chin 152), so they scale with the face.
"""

from dataclasses import dataclass

import numpy as np

# Lip contours from one mouth corner to the other (mediapipe canonical face mesh indices).
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (146, 91, 181, 84, 17, 314, 405, 321, 375)  # corners 61/291 belong to UPPER_OUTER
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)  # corners 78/308 belong to UPPER_INNER
# Pairs (upper, lower) facing each other across the lip parting, centre pair 13/14.
INNER_PAIRS = tuple(zip(UPPER_INNER[1:-1], LOWER_INNER, strict=True))
CHIN_LINE = (18, 200, 199, 175, 152)  # below the lower lip, down the midline
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE = (1, 2, 4, 5, 6, 98, 327, 168, 195, 197, 48, 278, 64, 294)
# The still upper face: eyes, brows, forehead.
STILL_UPPER = (33, 133, 159, 145, 263, 362, 386, 374, 70, 105, 107, 300, 334, 336, 9, 151)
# Eyes: corners (outer, inner), upper lid and lower lid, each ordered corner to corner.
RIGHT_EYE = ((33, 133), (246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155))
LEFT_EYE = ((263, 362), (466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382))
EYE_OUTER = (33, 263)
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
MOUTH_CORNERS = (61, 291)


@dataclass(frozen=True)
class FaceFrame:
    """A similarity frame on the face: origin at the mouth centre, unit = face height in px."""

    origin: np.ndarray  # (2,) px
    x_axis: np.ndarray  # (2,) unit vector along the eye line
    y_axis: np.ndarray  # (2,) unit vector, x_axis turned 90 degrees towards the chin
    face_px: float  # face height in px

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> "FaceFrame":
        eye_line = lm[EYE_OUTER[1]] - lm[EYE_OUTER[0]]
        x_axis = eye_line / np.linalg.norm(eye_line)
        y_axis = np.array([-x_axis[1], x_axis[0]])
        origin = (lm[MOUTH_CORNERS[0]] + lm[MOUTH_CORNERS[1]]) / 2
        face_px = float((lm[CHIN] - lm[FOREHEAD]) @ y_axis)
        return cls(origin.astype(np.float64), x_axis, y_axis, face_px)

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) px -> (..., 2) (u, v) in face heights."""
        rel = pts - self.origin
        uv: np.ndarray = np.stack([rel @ self.x_axis, rel @ self.y_axis], axis=-1) / self.face_px
        return uv

    def to_pixel_offsets(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) offsets in face heights -> (..., 2) px offsets in image axes."""
        px: np.ndarray = (uv[..., :1] * self.x_axis + uv[..., 1:] * self.y_axis) * self.face_px
        return px


def apply_affine(grid: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(h, w, 2) float32 pixel coordinates mapped by a 2x3 affine matrix."""
    rot, shift = matrix[:, :2].astype(np.float32), matrix[:, 2].astype(np.float32)
    x, y = grid[..., 0], grid[..., 1]
    out = np.empty_like(grid)
    out[..., 0] = rot[0, 0] * x + rot[0, 1] * y + shift[0]
    out[..., 1] = rot[1, 0] * x + rot[1, 1] * y + shift[1]
    return out
