"""Lip-sync figures of a rendered video against the phone-derived truth (used by benchmarks/lipsync.py).

All series are per video frame n, the frame shown while audio [40 n, 40 n + 40) ms plays.
- Truth aperture of frame n: jaw_open * (1 - lip_press) of the control targets, averaged over the
  frame's 4 mel frames (the targets already close the jaw in a bilabial's core; the press factor
  keeps a closure closed however the blur spreads the jaw).
- Measured aperture: FaceMesh's inner-lip gap / face height on the rendered (and decoded) frame;
  NaN where no face was found, and such frames are left out of every figure.
- Correlation: Pearson over all frames of all utterances, pooled.
- Best lag: both series upsampled to the 10 ms mel hop (linear), the correlation scanned over
  +-200 ms, the peak refined with a parabola; > 0 means the video is late.
- Bilabial closure: for each /p b m/ phone (the PP viseme), a hit if the measured aperture in the
  frame holding the phone's centre, or the frame either side, is below the closure threshold:
  CLOSURE_FRACTION of the way up the utterance's open range (its 5th to 95th percentile aperture;
  every utterance starts and ends at rest, so the 5th percentile is the closed mouth).
- Viseme accuracy: argmax of the model's viseme output against the truth viseme at the frame's
  centre (40 n + 20 ms).
- Width correlation: FaceMesh's mouth width (corner to corner / face height) against the truth's
  lip_spread - lip_round per frame, pooled: does "ee" widen and "oo" narrow the mouth on screen.
- Mouth motion: the measured aperture's 5th-95th percentile spread, pooled (face heights); a model's
  over the oracle's on the same speech says whether it opens the mouth as far as speech does.
- Std ratio: per control, the standard deviation of the controls the face was rendered with over
  the truth's, pooled (below 1: the model under-articulates that control).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lipstream.engine.constants import HOP_MS, MEL_FRAMES_PER_VIDEO_FRAME, VIDEO_FPS, exact_div
from lipstream.engine.controls import CONTROL_NAMES, JAW_OPEN, LIP_PRESS, LIP_ROUND, LIP_SPREAD, VISEMES
from lipstream.training.tts import Phone
from lipstream.training.visemes import viseme_segments

FRAME_MS = exact_div(1000, VIDEO_FPS)  # 40
MAX_LAG_MS = 200
CLOSURE_FRACTION = 0.25
OPEN_RANGE_PERCENTILES = (5.0, 95.0)
BILABIAL = "PP"


@dataclass(frozen=True)
class Truth:
    """What the phones say about one utterance, per video frame."""

    aperture: np.ndarray  # (N,) expected lip gap in control units
    visemes: np.ndarray  # (N,) viseme index at each frame's centre
    bilabial_centres_s: tuple[float, ...]  # centre time of every /p b m/ phone
    width: np.ndarray | None = None  # (N,) expected mouth width change: lip_spread - lip_round
    controls: np.ndarray | None = None  # (N, N_CONTROLS) the targets, each frame's mel frames averaged


@dataclass(frozen=True)
class Measured:
    """What the rendered video and the model showed, per video frame."""

    aperture: np.ndarray  # (N,) inner-lip gap / face height; NaN where no face was found
    visemes: np.ndarray | None = None  # (N,) argmax of the model's viseme output, if it has one
    width: np.ndarray | None = None  # (N,) mouth corner to corner / face height; NaN where not found
    controls: np.ndarray | None = None  # (N, N_CONTROLS) the controls the face was rendered with


@dataclass(frozen=True)
class LipsyncScore:
    correlation: float
    best_lag_ms: float
    correlation_at_best_lag: float
    closure_hit_rate: float
    closures: int
    viseme_accuracy: float | None
    frames: int
    face_found: float  # fraction of frames where FaceMesh found the face
    width_correlation: float = float("nan")  # measured mouth width against spread - round
    motion: float = float("nan")  # mouth motion: the measured aperture's 5th-95th percentile spread
    std_ratio: dict[str, float] | None = None  # per control: shown / true standard deviation


def truth_aperture(controls: np.ndarray) -> np.ndarray:
    """(T, N_CONTROLS) per-mel-frame targets -> (T // 4,) truth aperture per whole video frame."""
    return _per_video_frame(controls[:, JAW_OPEN].astype(np.float64) * (1.0 - controls[:, LIP_PRESS]))


def truth_width(controls: np.ndarray) -> np.ndarray:
    """(T, N_CONTROLS) targets -> (T // 4,) expected mouth width change: wide "ee" up, round "oo" down."""
    return _per_video_frame(controls[:, LIP_SPREAD].astype(np.float64) - controls[:, LIP_ROUND])


def _per_video_frame(series: np.ndarray) -> np.ndarray:
    n = series.size // MEL_FRAMES_PER_VIDEO_FRAME
    per_frame: np.ndarray = series[: n * MEL_FRAMES_PER_VIDEO_FRAME].reshape(n, MEL_FRAMES_PER_VIDEO_FRAME)
    mean: np.ndarray = per_frame.mean(axis=1)
    return mean


def frame_centre_visemes(phones: tuple[Phone, ...], phoneset: str, n_frames: int) -> np.ndarray:
    """(n_frames,) viseme index sounding at each video frame's centre; silence outside the phones."""
    spans = viseme_segments(phones, phoneset)
    times_s = (np.arange(n_frames) + 0.5) * FRAME_MS / 1000
    out = np.zeros(n_frames, np.int64)
    for viseme, start, end in spans:
        out[(times_s >= start) & (times_s < end)] = VISEMES.index(viseme)
    return out


def bilabial_centres_s(phones: tuple[Phone, ...], phoneset: str) -> tuple[float, ...]:
    return tuple((start + end) / 2 for v, start, end in viseme_segments(phones, phoneset) if v == BILABIAL)


def make_truth(controls: np.ndarray, phones: tuple[Phone, ...], phoneset: str) -> Truth:
    aperture = truth_aperture(controls)
    n = aperture.size * MEL_FRAMES_PER_VIDEO_FRAME
    per_frame = controls[:n].reshape(aperture.size, MEL_FRAMES_PER_VIDEO_FRAME, -1).mean(axis=1)
    return Truth(aperture, frame_centre_visemes(phones, phoneset, aperture.size),
                 bilabial_centres_s(phones, phoneset), truth_width(controls), per_frame)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over the pairs where both are finite; NaN if either is constant there."""
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep].astype(np.float64), b[keep].astype(np.float64)
    if a.size < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def upsample(series: np.ndarray, factor: int = MEL_FRAMES_PER_VIDEO_FRAME) -> np.ndarray:
    """(N,) per video frame -> (N * factor,) at the sub-frame centres, linear between frame centres
    (held at the ends); a NaN spreads to its neighbours' interpolated values instead of being bridged."""
    x = np.asarray(series, np.float64)
    t = (np.arange(x.size * factor) + 0.5) / factor - 0.5  # in frame units, frame k's centre at k
    lo = np.clip(np.floor(t).astype(int), 0, max(x.size - 1, 0))
    hi = np.clip(lo + 1, 0, max(x.size - 1, 0))
    w = np.clip(t - lo, 0.0, 1.0)
    out: np.ndarray = x[lo] * (1 - w) + x[hi] * w
    return out


def _shifted_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool (measured[t + lag], truth[t]) over every utterance."""
    ms, ts = [], []
    for measured, truth in pairs:
        n = min(measured.size, truth.size)
        if lag >= 0:
            ms.append(measured[lag:n])
            ts.append(truth[: max(n - lag, 0)])
        else:
            ms.append(measured[: n + lag])
            ts.append(truth[-lag:n])
    return np.concatenate(ms), np.concatenate(ts)


def lag_curve(pairs: Sequence[tuple[np.ndarray, np.ndarray]], max_lag_ms: int = MAX_LAG_MS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(lags in ms at the 10 ms hop, pooled correlation at each) for (measured, truth) per-frame pairs."""
    up = [(upsample(m), upsample(t)) for m, t in pairs]
    lags = np.arange(-(max_lag_ms // HOP_MS), max_lag_ms // HOP_MS + 1)
    corr = np.array([pearson(*_shifted_pairs(up, int(k))) for k in lags])
    return lags * HOP_MS, corr


def best_lag(pairs: Sequence[tuple[np.ndarray, np.ndarray]], max_lag_ms: int = MAX_LAG_MS
             ) -> tuple[float, float]:
    """(lag ms, correlation there) maximising the pooled correlation; > 0: the video is late."""
    lags_ms, corr = lag_curve(pairs, max_lag_ms)
    if not np.isfinite(corr).any():
        return float("nan"), float("nan")
    k = int(np.nanargmax(corr))
    offset = 0.0
    if 0 < k < corr.size - 1 and np.isfinite(corr[k - 1 : k + 2]).all():
        left, mid, right = corr[k - 1 : k + 2]
        curvature = left - 2 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return float(lags_ms[k] + offset * HOP_MS), float(corr[k])


def closure_threshold(measured: np.ndarray) -> float:
    lo, hi = np.nanpercentile(measured, OPEN_RANGE_PERCENTILES)
    return float(lo + CLOSURE_FRACTION * (hi - lo))


def closure_hits(measured: np.ndarray, centres_s: Sequence[float]) -> np.ndarray:
    """(len(centres),) bool: closed (below the utterance's threshold) within one frame of each centre.
    Centres past the end of the video are not scored."""
    if not np.isfinite(measured).any():
        return np.zeros(len(centres_s), bool)
    threshold = closure_threshold(measured)
    hits = []
    for centre in centres_s:
        n = int(centre * 1000 // FRAME_MS)
        if n >= measured.size:
            continue
        window = measured[max(n - 1, 0) : n + 2]
        hits.append(bool(np.isfinite(window).any() and np.nanmin(window) < threshold))
    return np.array(hits, bool)


def viseme_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    n = min(predicted.size, truth.size)
    return float((predicted[:n] == truth[:n]).mean()) if n else float("nan")


def score(items: Sequence[tuple[Measured, Truth]]) -> LipsyncScore:
    """Pool the figures over utterances (each measured series trimmed to its truth's whole frames)."""
    pairs = [(m.aperture[: t.aperture.size], t.aperture) for m, t in items]
    measured = np.concatenate([m for m, _ in pairs])
    truth = np.concatenate([t for _, t in pairs])
    lag_ms, lag_corr = best_lag(pairs)
    hits = np.concatenate([closure_hits(m.aperture, t.bilabial_centres_s) for m, t in items])
    visemes = [(m.visemes, t.visemes) for m, t in items if m.visemes is not None]
    accuracy = None
    if visemes and len(visemes) == len(items):
        n = [min(p.size, t.size) for p, t in visemes]
        accuracy = viseme_accuracy(np.concatenate([p[:k] for (p, _), k in zip(visemes, n, strict=True)]),
                                   np.concatenate([t[:k] for (_, t), k in zip(visemes, n, strict=True)]))
    return LipsyncScore(
        correlation=pearson(measured, truth),
        best_lag_ms=lag_ms,
        correlation_at_best_lag=lag_corr,
        closure_hit_rate=float(hits.mean()) if hits.size else float("nan"),
        closures=int(hits.size),
        viseme_accuracy=accuracy,
        frames=int(measured.size),
        face_found=float(np.isfinite(measured).mean()) if measured.size else float("nan"),
        width_correlation=_width_correlation(items),
        motion=motion_spread(measured),
        std_ratio=std_ratio(items),
    )


def motion_spread(aperture: np.ndarray) -> float:
    """How far the mouth moves: the 5th-95th percentile spread of the aperture (NaN frames left out)."""
    if not np.isfinite(aperture).any():
        return float("nan")
    lo, hi = np.nanpercentile(aperture, OPEN_RANGE_PERCENTILES)
    return float(hi - lo)


def std_ratio(items: Sequence[tuple[Measured, Truth]]) -> dict[str, float] | None:
    """Per control, the standard deviation of the controls shown over the truth's, pooled; None
    when a row has no controls (the oracle renders the truth itself)."""
    pairs = [(m.controls, t.controls) for m, t in items if m.controls is not None and t.controls is not None]
    if not pairs or len(pairs) < len(items):
        return None
    n = [min(len(m), len(t)) for m, t in pairs]
    shown = np.concatenate([m[:k] for (m, _), k in zip(pairs, n, strict=True)])
    truth = np.concatenate([t[:k] for (_, t), k in zip(pairs, n, strict=True)])
    ratio = shown.std(axis=0) / np.maximum(truth.std(axis=0), 1e-6)
    return {name: float(r) for name, r in zip(CONTROL_NAMES, ratio, strict=True)}


def _width_correlation(items: Sequence[tuple[Measured, Truth]]) -> float:
    """Pearson of measured mouth width against the truth's spread - round, pooled; NaN if unmeasured."""
    pairs = [(m.width[: t.width.size], t.width[: m.width.size]) for m, t in items
             if m.width is not None and t.width is not None]
    if not pairs or len(pairs) < len(items):
        return float("nan")
    return pearson(np.concatenate([m for m, _ in pairs]), np.concatenate([t for _, t in pairs]))


def by_engine(items: list[tuple[Measured, Truth]], utts: list[Any]) -> dict[str, dict[str, Any]]:
    """The row's figures per speech engine (which voices the model follows, which not)."""
    engines = sorted({u.engine for u in utts})
    pairs = list(zip(items, utts, strict=True))
    return {e: asdict(score([it for it, u in pairs if u.engine == e])) for e in engines}
