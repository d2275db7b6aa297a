"""Mouth controls -> landmark offsets in the face's own frame (units: face heights).

Each control moves a set of landmarks linearly, so the rig can precompute one motion field per
control. Offsets are shaped by where a point sits on the lips: `s` runs from -1 (right mouth
corner in the image's left) to +1, and `arch` makes the lips part more at the
middle than at the corners (arch = 1 - s^2). Magnitudes are fractions of the face height (forehead to chin,
~17 cm on an adult), e.g. a wide "aa" drops the lower lip ~13% of it (~2 cm).
"""

import numpy as np

from lipstream.engine.controls import JAW_OPEN, LIP_PRESS, LIP_ROUND, LIP_SPREAD, LIP_TUCK, N_CONTROLS
from lipstream.engine.faceframe import (
    CHIN_LINE,
    FACE_OVAL,
    INNER_PAIRS,
    LOWER_INNER,
    LOWER_OUTER,
    MOUTH_CORNERS,
    NOSE_TIP,
    UPPER_INNER,
    UPPER_OUTER,
)

N_LANDMARKS = 478
REST = N_CONTROLS  # index of the rest shape in the (N_CONTROLS + 1) offset stack
CORNERS = (*MOUTH_CORNERS, UPPER_INNER[0], UPPER_INNER[-1])
JAW_DROP = 0.125  # chin travel at jaw_open = 1
LIP_PART = 0.13  # lower inner lip travel at the middle, jaw_open = 1
CORNER_DROP = 0.04  # corners follow the jaw a little
# skin beside each mouth corner (mediapipe ids; (left side, right side), how far it follows the
# corner): both sides of the rig share these, so the cheeks cannot shear where the corners move
CHEEK_RING = (((57, 287), 0.55), ((186, 410), 0.5), ((212, 432), 0.3))
REST_OVERLAP = 0.005  # how far each lip passes the meeting line when the photo's mouth is closed


def _lip_groups() -> dict[str, tuple[int, ...]]:
    return {
        "UO": UPPER_OUTER[1:-1], "UI": UPPER_INNER[1:-1], "LO": LOWER_OUTER, "LI": LOWER_INNER,
        "corner": CORNERS,
    }


def cheek_ring() -> tuple[int, ...]:
    return tuple(i for pair, _ in CHEEK_RING for i in pair)


def jaw_points(uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-oval points below the jaw hinge and how far each follows the chin (0..1)."""
    oval = np.array(FACE_OVAL)
    v_hinge = uv[NOSE_TIP, 1] - 0.05  # the jaw turns about a point near the ears
    v_chin = uv[CHIN_LINE[-1], 1]
    weight = np.clip((uv[oval, 1] - v_hinge) / (v_chin - v_hinge), 0.0, 1.0) ** 1.3
    keep = weight > 0.0
    return oval[keep], weight[keep]


def control_offsets(uv: np.ndarray) -> np.ndarray:
    """(N_CONTROLS + 1, 478, 2) offsets (du, dv) in face heights; the last is the rest shape."""
    left, right = uv[MOUTH_CORNERS[0], 0], uv[MOUTH_CORNERS[1], 0]
    centre, half = (left + right) / 2, (right - left) / 2
    off = np.zeros((N_CONTROLS + 1, N_LANDMARKS, 2))
    groups = _lip_groups()
    for name, idx in groups.items():
        ids = np.array(idx)
        s = np.clip((uv[ids, 0] - centre) / half, -1.0, 1.0)
        arch = 1.0 - s**2  # the lips part most at the middle, closing smoothly into the corners
        if name == "corner":
            s, arch = np.sign(s), np.zeros_like(s)
        _lip_shapes(off, ids, name, s, arch)
    # a smiling photo has its corners above the lips' middle; pursed lips bring them level
    corners = np.array(CORNERS)
    middle = list(INNER_PAIRS[len(INNER_PAIRS) // 2])  # the inner lips at the mouth's middle
    smile = max(float(uv[middle, 1].mean() - uv[corners, 1].mean()), 0.0)
    off[LIP_ROUND, corners, 1] += min(smile, 0.05)
    for pair, follow in CHEEK_RING:
        for cheek, corner in zip(pair, MOUTH_CORNERS, strict=True):
            off[:N_CONTROLS, cheek] = follow * off[:N_CONTROLS, corner]
    chin = np.array(CHIN_LINE)
    jaw, jaw_weight = jaw_points(uv)
    for ids, weight in ((chin, np.ones(len(chin))), (jaw, jaw_weight)):
        off[JAW_OPEN, ids, 1] = JAW_DROP * weight
        off[LIP_PRESS, ids, 1] = -0.03 * weight
        off[LIP_TUCK, ids, 1] = -0.01 * weight
    off[REST] = _rest_shape(uv, off)
    return off


def _lip_shapes(off: np.ndarray, ids: np.ndarray, name: str, s: np.ndarray, arch: np.ndarray) -> None:
    upper = name in ("UO", "UI")
    corner = name == "corner"
    # jaw_open: corners follow the jaw a little and come in; the lower lip drops, the upper lifts
    off[JAW_OPEN, ids, 0] = -0.012 * s
    if corner or upper:
        lift = 0.012 if name == "UI" else 0.008
        off[JAW_OPEN, ids, 1] = CORNER_DROP * (1 - arch) - lift * arch
    else:
        part = LIP_PART if name == "LI" else LIP_PART - 0.005
        off[JAW_OPEN, ids, 1] = CORNER_DROP + (part - CORNER_DROP) * arch
    # lip_spread: corners pull out and up; the outer contours flatten towards the parting (thinner)
    off[LIP_SPREAD, ids, 0] = 0.06 * s
    thin = {"UO": 0.012, "LO": -0.012}.get(name, 0.0)
    off[LIP_SPREAD, ids, 1] = (-0.012 if corner else 0.0) + thin * arch
    # lip_round ("oo", "w"): corners come well in, the lips bunch up and push forward, so from the
    # front they look fuller (pouted), and part a little in a small round opening
    off[LIP_ROUND, ids, 0] = -0.085 * s
    pout = {"UO": -0.022, "LO": 0.028}.get(name, 0.0) * arch
    opening = {"UI": -0.01, "LI": 0.02}.get(name, 0.0) * arch**2  # rounder: closed towards the sides
    off[LIP_ROUND, ids, 1] = pout + opening
    # lip_press: lips meet and thin; the lower lip is pushed up against the upper
    off[LIP_PRESS, ids, 1] = {"UO": 0.012, "UI": 0.012, "LO": -0.06, "LI": -0.05}.get(name, 0.0) * arch
    # lip_tuck: the lower lip rolls up under the upper teeth; the upper lip lifts to show them
    off[LIP_TUCK, ids, 1] = {"UO": -0.012, "UI": -0.024, "LO": -0.045, "LI": 0.0}.get(name, 0.0) * arch


def _rest_shape(uv: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Offsets that close the photo's lips if they are apart, so silence shows a closed mouth."""
    rest = np.zeros((N_LANDMARKS, 2))
    upper, lower = np.array(INNER_PAIRS).T
    gap = np.clip(uv[lower, 1] - uv[upper, 1], 0.0, None)  # (9,) face heights, >= 0
    if gap.max() < 0.004:
        return rest
    order = np.argsort(uv[upper, 0])
    u_pairs, gap_sorted = uv[upper, 0][order], gap[order]
    groups = _lip_groups()
    for name in ("UO", "UI", "LO", "LI"):
        ids = np.array(groups[name])
        g = np.interp(uv[ids, 0], u_pairs, gap_sorted)
        # each lip also goes a little past the meeting line, so the seam shows lip, not teeth
        overlap = REST_OVERLAP * np.clip(g / 0.01, 0.0, 1.0)
        rest[ids, 1] = 0.4 * g + overlap if name[0] == "U" else -0.6 * g - overlap
    # the jaw closes with the lower lip, as far as the jaw_open shape would have moved it
    centre_gap = float(gap.max())
    moved = off[JAW_OPEN, :, 1] > 0
    jaw_only = moved.copy()
    jaw_only[np.concatenate([np.array(v) for v in groups.values()])] = False
    rest[jaw_only, 1] = -0.6 * centre_gap * off[JAW_OPEN, jaw_only, 1] / JAW_DROP
    return rest
