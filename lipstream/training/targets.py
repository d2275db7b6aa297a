"""Frame labels from phone timings: a viseme per mel frame and mouth-control targets with coarticulation.

Mel frame t is labelled by what is sounding at its hop centre, (t + 0.5) * HOP_MS. Control targets
are built per control from the viseme sequence:
1. anticipation: control c at time t aims at the viseme sounding at t + lead_c (the lips move
   toward the next sound before it is heard; rounding leads most);
2. a per-control rate: a zero-phase Gaussian blur of width sigma_c (press is fast, jaw slow), so a
   move starts about lead_c + 2 sigma_c before the acoustic boundary;
3. bilabial closures: over the middle of every PP span (at least one frame, however short) lip_press
   is 1 and the jaw closed, easing back out over CLOSURE_EASE_S.
Silence targets REST, so the blur eases into and out of rest. Everything is deterministic.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.engine.controls import (
    CONTROL_NAMES,
    JAW_OPEN,
    LIP_PRESS,
    N_CONTROLS,
    VISEMES,
    viseme_control_table,
)
from lipstream.training.tts import Phone
from lipstream.training.visemes import viseme_segments

HOP_S = HOP_SAMPLES / SAMPLE_RATE  # 0.01 s per mel frame


@dataclass(frozen=True)
class CoarticulationConfig:
    # Per control, in CONTROL_NAMES order: jaw_open, lip_spread, lip_round, lip_press, lip_tuck.
    lead_ms: tuple[float, ...] = (20.0, 30.0, 55.0, 10.0, 20.0)
    sigma_ms: tuple[float, ...] = (25.0, 20.0, 25.0, 8.0, 12.0)
    closure_core_fraction: float = 0.5  # middle fraction of a PP span held fully closed
    min_closure_half_s: float = 0.005  # a 10 ms core always holds a hop centre: even a short /p/ closes
    closure_ease_s: float = 0.03  # press ramps in and out over this, outside the core

    def __post_init__(self) -> None:
        assert len(self.lead_ms) == len(self.sigma_ms) == N_CONTROLS == len(CONTROL_NAMES)


DEFAULT_COARTICULATION = CoarticulationConfig()


def frame_times_s(n_frames: int) -> np.ndarray:
    """(T,) hop centres in seconds."""
    return (np.arange(n_frames) + 0.5) * HOP_S


def _viseme_at(spans: list[tuple[str, float, float]], times_s: np.ndarray) -> np.ndarray:
    """(len(times),) viseme index sounding at each time; silence outside the spans."""
    if not spans:
        return np.zeros(times_s.shape, np.int64)
    ends = np.array([end for _, _, end in spans])
    starts = np.array([start for _, start, _ in spans])
    ids = np.array([VISEMES.index(v) for v, _, _ in spans], dtype=np.int64)
    k = np.minimum(np.searchsorted(ends, times_s, side="right"), len(spans) - 1)
    inside = (times_s >= starts[k]) & (times_s < ends[k])
    return np.where(inside, ids[k], 0)


def frame_visemes(phones: tuple[Phone, ...], phoneset: str, n_frames: int) -> np.ndarray:
    """(T,) int64 viseme index per mel frame."""
    return _viseme_at(viseme_segments(phones, phoneset), frame_times_s(n_frames))


def _blur(signal: np.ndarray, sigma_frames: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma_frames)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma_frames, 1e-3)) ** 2)
    padded = np.pad(signal, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _closure_envelope(
    spans: list[tuple[str, float, float]], times_s: np.ndarray, cfg: CoarticulationConfig
) -> np.ndarray:
    """(T,) 1 over the core of each bilabial span, easing linearly to 0 over closure_ease_s."""
    envelope = np.zeros(times_s.shape, np.float64)
    for viseme, start, end in spans:
        if viseme != "PP":
            continue
        centre = (start + end) / 2
        half = max((end - start) * cfg.closure_core_fraction / 2, cfg.min_closure_half_s)
        distance = np.maximum(np.abs(times_s - centre) - half, 0.0)
        envelope = np.maximum(envelope, np.clip(1.0 - distance / cfg.closure_ease_s, 0.0, 1.0))
    return envelope


def control_targets(
    phones: tuple[Phone, ...],
    phoneset: str,
    n_frames: int,
    cfg: CoarticulationConfig = DEFAULT_COARTICULATION,
) -> np.ndarray:
    """(T, N_CONTROLS) float32 control targets in [0, 1]."""
    spans = viseme_segments(phones, phoneset)
    times = frame_times_s(n_frames)
    table = viseme_control_table()
    controls = np.empty((n_frames, N_CONTROLS), np.float64)
    for c in range(N_CONTROLS):
        aimed = table[_viseme_at(spans, times + cfg.lead_ms[c] / 1000), c]
        controls[:, c] = (
            _blur(aimed.astype(np.float64), cfg.sigma_ms[c] / 1000 / HOP_S) if n_frames else aimed
        )
    closure = _closure_envelope(spans, times, cfg)
    controls[:, LIP_PRESS] = np.maximum(controls[:, LIP_PRESS], closure)
    controls[:, JAW_OPEN] *= 1.0 - closure
    return np.clip(controls, 0.0, 1.0).astype(np.float32)
