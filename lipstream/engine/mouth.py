"""The mouth interior: what shows between the parted lips (cavity, teeth, tongue).

The photo usually shows a closed mouth, so nothing in it can be stretched into an open one. The
interior is painted per frame between the moved inner-lip lines, in the face frame: a dark
cavity (the lip colour, much darker, deepest at the middle), the upper teeth just under the upper
lip following its curve, a hint of lower teeth and tongue when the jaw is wide open. Coverage is
computed per pixel from the exact lip lines (a 1-px box filter), so the edge is smooth.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.faceframe import FaceFrame

TEETH_HEIGHT = 0.045  # visible upper incisors, face heights (~8 mm)
LOWER_TEETH_HEIGHT = 0.012
INCISOR_WIDTH = 0.045  # face heights between tooth edges
TEETH_SPAN = 0.85  # teeth show over this fraction of the mouth's half width
CORNER_FADE = 0.2  # fraction of the half width over which the interior fades into a corner
SEAM_DARKNESS = 0.45  # how dark the line between closed lips is (interior coverage)
WIDE_OPEN = 0.06  # gap (face heights) from which the lower teeth and tongue appear
LIP_SAMPLES = ((0, 13), (37, 82), (267, 312), (17, 14), (84, 87), (314, 317))  # (outer, inner) pairs
CHEEKS = (50, 280, 101, 330)


@dataclass(frozen=True)
class MouthAssets:
    cavity_rgb: np.ndarray  # (3,) float32, 0..255
    teeth_rgb: np.ndarray
    tongue_rgb: np.ndarray
    face_px: float
    edge_px: float  # width of the interior's soft edges: the photo's own blur where it was upscaled


def _patch_median(image: np.ndarray, pt: np.ndarray, radius: int = 2) -> np.ndarray:
    x, y = np.clip(np.round(pt).astype(int), radius, np.array(image.shape[1::-1]) - radius - 1)
    patch = image[y - radius : y + radius + 1, x - radius : x + radius + 1].reshape(-1, 3)
    median: np.ndarray = np.median(patch, axis=0).astype(np.float32)
    return median


def analyse_mouth(image: np.ndarray, lm: np.ndarray, frame: FaceFrame, upscale: float = 1.0) -> MouthAssets:
    """Interior colours from the photo's lips and skin, so the mouth matches its lighting."""
    lips = np.mean([_patch_median(image, (lm[a] + lm[b]) / 2) for a, b in LIP_SAMPLES], axis=0)
    skin = np.mean([_patch_median(image, lm[i], 4) for i in CHEEKS], axis=0)
    light = float(np.clip(skin.mean() / 160.0, 0.45, 1.05))  # darker photos get darker teeth
    teeth = np.array([222.0, 212.0, 194.0]) * light
    teeth = 0.9 * teeth + 0.1 * skin  # take on the light's colour
    return MouthAssets(
        cavity_rgb=(lips * 0.22).astype(np.float32),
        teeth_rgb=teeth.astype(np.float32),
        tongue_rgb=(lips * np.array([0.75, 0.5, 0.5])).astype(np.float32),
        face_px=frame.face_px,
        edge_px=max(1.0, 0.7 * upscale),
    )


def interior(assets: MouthAssets, u: np.ndarray, above: np.ndarray, below: np.ndarray,
             corners_u: tuple[float, float], rounding: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Colour (h, w, 3) float32 and coverage (h, w) float32 of the interior.

    u: px in the face frame; above / below: px from the upper / lower lip's inner edge (both > 0
    between the lips). Where closed lips meet (above == below) a thin dark seam is drawn.
    rounding (lip_round): pushed-out lips stand in front of the teeth, which show less.
    """
    f = assets.face_px
    centre, half = (corners_u[0] + corners_u[1]) / 2, max((corners_u[1] - corners_u[0]) / 2, 1.0)
    # fade out over the last part of the way to each corner: no hard edge where the lips meet
    # (rounded lips: over most of it, so the small opening is an oval, not a slot)
    inside = np.clip((half - np.abs(u - centre)) / ((CORNER_FADE + 0.5 * rounding) * half), 0.0, 1.0)
    soft = assets.edge_px
    coverage = np.clip(np.minimum(above, below) / soft + 0.5, 0.0, 1.0)
    seam = SEAM_DARKNESS * np.clip(1.0 - np.abs(above - below) / 2.0, 0.0, 1.0)  # where lips meet
    coverage = np.maximum(coverage, seam) * inside
    a, b = np.maximum(above, 0.0), np.maximum(below, 0.0)
    gap = a + b
    s = np.clip((u - centre) / half, -1.0, 1.0)
    middle = np.sqrt(1.0 - s * s)  # 1 at the middle of the mouth, 0 at the corners
    t = a / np.maximum(gap, 1.0)  # 0 at the upper lip, 1 at the lower
    shade = 1.0 - 0.55 * np.sin(np.pi * t) * middle  # the back of the mouth gets the least light
    colour = assets.cavity_rgb * ((0.6 + 0.4 * middle) * shade)[..., None]
    wide = np.clip((gap / f - WIDE_OPEN) / 0.04, 0.0, 1.0)
    du = u - centre
    # With the jaw not wide open anywhere (most frames) tongue and lower teeth cover nothing, and
    # blending with a coverage of 0 leaves the colour as it is: ~35 numpy calls skipped.
    if wide.any():
        _tongue_and_lower_teeth(assets, colour, du, b, (s, t, middle), wide)
    phase = _tooth_phase(du, f)
    span = np.sqrt(np.clip(1 - (s / TEETH_SPAN) ** 2, 0.0, 1.0))  # 1 mid-mouth, 0 past the teeth
    cover = _upper_cover(f, phase, span, a, soft, 1.0 - 0.7 * rounding)
    colour += (_upper_teeth(assets, phase, span, a) - colour) * cover[..., None]
    return colour, coverage


def _tongue_and_lower_teeth(assets: MouthAssets, colour: np.ndarray, du: np.ndarray, b: np.ndarray,
                            where: tuple[np.ndarray, np.ndarray, np.ndarray], wide: np.ndarray) -> None:
    """Paint the tongue, then the tips of the lower incisors just above the lower lip, in its
    shadow, into colour (h, w, 3). where: (s, t, middle) as `interior` has them."""
    s, t, middle = where
    f, soft = assets.face_px, assets.edge_px
    tongue = np.clip((t - 0.55) / 0.45, 0.0, 1.0) ** 0.7 * middle * wide
    colour += (assets.tongue_rgb * (0.55 + 0.45 * t)[..., None] - colour) * tongue[..., None]
    lower_h = LOWER_TEETH_HEIGHT * f * wide * np.sqrt(np.clip(1 - (s / 0.55) ** 2, 0.0, 1.0))
    tips = 0.75 + 0.25 * np.clip(_tooth_phase(du + 0.5 * INCISOR_WIDTH * f, f) / 0.2, 0.0, 1.0)
    lower = np.clip((lower_h * tips - b) / soft + 0.5, 0.0, 1.0) * (lower_h > 0.5)
    shade = (0.45 + 0.25 * middle) * np.clip(b / np.maximum(lower_h, 1.0), 0.6, 1.0)
    colour += (assets.teeth_rgb * shade[..., None] - colour) * lower[..., None]


def _tooth_phase(du: np.ndarray, f: float) -> np.ndarray:
    """0 at a tooth's edge, 0.5 at its middle (teeth from the mouth's centre line outwards)."""
    phase = du / (INCISOR_WIDTH * f)
    middle: np.ndarray = np.abs(phase - np.round(phase))
    return middle


def _upper_cover(f: float, phase: np.ndarray, span: np.ndarray, below_lip: np.ndarray, soft: float,
                 shown: float = 1.0) -> np.ndarray:
    """Coverage of the upper teeth: a band under the lip, shorter to the sides, each tooth rounded;
    `shown` scales its height. phase: `_tooth_phase`; span: 1 mid-mouth, 0 where the teeth end."""
    height = shown * TEETH_HEIGHT * f * span
    rounded = np.clip(phase / 0.2, 0.0, 1.0) ** 0.5  # corners of each tooth's tip
    height *= 0.82 + 0.18 * rounded
    cover: np.ndarray = np.clip((height - below_lip) / soft + 0.5, 0.0, 1.0)
    return cover


def _upper_teeth(assets: MouthAssets, phase: np.ndarray, span: np.ndarray,
                 below_lip: np.ndarray) -> np.ndarray:
    """Off-white, darker towards the corners, in the lip's shadow and at each tooth's edges."""
    f = assets.face_px
    side = 0.55 + 0.45 * span
    lip_shadow = 0.78 + 0.22 * np.clip(below_lip / (0.35 * TEETH_HEIGHT * f), 0.0, 1.0)
    tooth = 0.8 + 0.2 * np.clip(phase / 0.25, 0.0, 1.0)  # rounded, not a grid
    colour: np.ndarray = assets.teeth_rgb * (side * lip_shadow * tooth)[..., None]
    return colour
