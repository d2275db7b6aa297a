"""Identity-free mouth controls and the viseme classes.

Controls are what the motion model predicts and what the rig turns into landmark motion.
Each lies in [0, 1]; 0 everywhere is the mouth at rest (lips lightly closed, relaxed).
Because they do not depend on whose face it is, any source can drive them (audio, a webcam).
"""

from dataclasses import dataclass

import numpy as np

CONTROL_NAMES: tuple[str, ...] = (
    "jaw_open",  # lower jaw and lower lip drop; 1 = a wide "aa"
    "lip_spread",  # corners pull outward; "ee", "s"
    "lip_round",  # corners come in, lips push forward; "oo", "w"
    "lip_press",  # lips pressed together and thinned; the closure of "p b m"
    "lip_tuck",  # lower lip rises behind the upper teeth; "f v"
)
N_CONTROLS = len(CONTROL_NAMES)
JAW_OPEN, LIP_SPREAD, LIP_ROUND, LIP_PRESS, LIP_TUCK = range(N_CONTROLS)

# The ARKit blendshapes each control stands for, to drive an ARKit-rigged (VRM, Live2D, 3D) face:
# set every listed blendshape to the control's value (both sides alike).
ARKIT_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "jaw_open": ("jawOpen",),
    "lip_spread": ("mouthStretchLeft", "mouthStretchRight"),
    "lip_round": ("mouthFunnel", "mouthPucker"),
    "lip_press": ("mouthClose", "mouthPressLeft", "mouthPressRight"),
    "lip_tuck": ("mouthRollLower",),
}

# The 15 Oculus/Meta visemes, in their conventional order.
VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U",
)
N_VISEMES = len(VISEMES)
BILABIAL = VISEMES.index("PP")  # /p b m/

# Target controls for each viseme, held at the viseme's centre (columns follow CONTROL_NAMES).
# Coarticulation and per-control rates act on top of these in the training targets.
VISEME_CONTROLS: dict[str, tuple[float, float, float, float, float]] = {
    "sil": (0.00, 0.00, 0.00, 0.00, 0.00),
    "PP": (0.00, 0.00, 0.00, 1.00, 0.00),
    "FF": (0.10, 0.10, 0.00, 0.00, 1.00),
    "TH": (0.20, 0.15, 0.00, 0.00, 0.00),
    "DD": (0.25, 0.20, 0.00, 0.00, 0.00),
    "kk": (0.30, 0.10, 0.00, 0.00, 0.00),
    "CH": (0.20, 0.00, 0.60, 0.00, 0.00),
    "SS": (0.10, 0.45, 0.00, 0.00, 0.00),
    "nn": (0.20, 0.15, 0.00, 0.00, 0.00),
    "RR": (0.20, 0.00, 0.50, 0.00, 0.00),
    "aa": (0.85, 0.15, 0.00, 0.00, 0.00),
    "E": (0.50, 0.50, 0.00, 0.00, 0.00),
    "I": (0.30, 0.80, 0.00, 0.00, 0.00),
    "O": (0.55, 0.00, 0.70, 0.00, 0.00),
    "U": (0.25, 0.00, 1.00, 0.00, 0.00),
}


def viseme_control_table() -> np.ndarray:
    """(N_VISEMES, N_CONTROLS) float32, rows in VISEMES order."""
    return np.array([VISEME_CONTROLS[v] for v in VISEMES], dtype=np.float32)


@dataclass(frozen=True)
class MotionOutput:
    """What a motion model says about one video frame."""

    controls: np.ndarray  # (N_CONTROLS,) float32 in [0, 1]
    visemes: np.ndarray | None = None  # (N_VISEMES,) probabilities, if the model has that head


REST = np.zeros(N_CONTROLS, dtype=np.float32)


@dataclass(frozen=True)
class Calibration:
    """A per-control affine map, clipped to [0, 1], fitted after training and shipped with the weights.

    A network trained on squared error regresses to the mean: its controls move less than the
    truth's (the mouth mumbles). Matching each control's mean and spread on validation speech
    undoes that without retraining; a negative offset keeps near-zero noise at rest.
    """

    gain: tuple[float, ...] = (1.0,) * N_CONTROLS
    offset: tuple[float, ...] = (0.0,) * N_CONTROLS

    def apply(self, controls: np.ndarray) -> np.ndarray:
        mapped = controls * np.asarray(self.gain, np.float32) + np.asarray(self.offset, np.float32)
        out: np.ndarray = np.clip(mapped, 0.0, 1.0).astype(np.float32)
        return out


IDENTITY = Calibration()


def close_for_bilabials(output: MotionOutput, gain: float) -> np.ndarray:
    """The controls with the viseme head's belief in /p b m/ (PP) closing the lips.

    A bilabial closure lasts 50-100 ms, one to three frames, and a regression head trained on
    mean squared error rounds it off; the classifier head sees it sharply. With c = min(gain *
    P(PP), 1), the jaw keeps (1 - c) of its opening and the lips press to at least c. Without a
    viseme head, or with gain 0, the controls pass unchanged. (Gain 2, the engine's default, was
    chosen on held-out utterances other than those `benchmarks/lipsync.py` reports on.)
    """
    controls = output.controls.astype(np.float32, copy=True)
    if output.visemes is None or gain <= 0.0:
        return controls
    closed = min(float(output.visemes[BILABIAL]) * gain, 1.0)
    controls[JAW_OPEN] *= 1.0 - closed
    controls[LIP_PRESS] = max(float(controls[LIP_PRESS]), closed)
    return controls
