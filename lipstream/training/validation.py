"""Held-out validation: how well predicted controls follow the phone-derived truth.

Measured at the mel frames the engine uses (each video frame's last hop), on held-out voices,
clean and with noise at 10 dB SNR, against the signal-processing baseline on the same audio.
Also checks that silence and breath-like noise leave the mouth at rest.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lipstream.engine.constants import HOP_MS, MEL_FRAMES_PER_VIDEO_FRAME, N_MELS
from lipstream.engine.controls import CONTROL_NAMES, JAW_OPEN
from lipstream.engine.mel import SILENCE_LOG_MEL, log_mel, video_frame_window
from lipstream.engine.motion import BaselineMotionModel
from lipstream.engine.smoothing import ControlSmoother
from lipstream.training.features import (
    Example,
    UtteranceSource,
    corpus_source,
    featurize,
    worker_pool,
)

NOISY_SNR_DB = 10.0
MAX_LAG_FRAMES = 10  # searched lags: +-100 ms

SequencePredictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # mel (T, 80) -> (T, 5), (T, 15)


def speech_power(audio: np.ndarray) -> float:
    """Mean power of the speech without its pauses: 20 ms blocks above 1% of the loudest block's."""
    frames = audio[: audio.size // 320 * 320].reshape(-1, 320).astype(np.float64)
    energy = (frames**2).mean(axis=1)
    return float(energy[energy > 0.01 * energy.max()].mean()) if energy.size else 1e-6


def with_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish (1/f) noise at `snr_db` below the speech's active level."""
    n = audio.size
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    noise = np.fft.irfft(spectrum, n)
    noise *= np.sqrt(speech_power(audio) / 10 ** (snr_db / 10) / (noise**2).mean())
    return (audio + noise).astype(np.float32)


@dataclass(frozen=True)
class ValidationSet:
    clean: list[Example]
    noisy: list[Example]  # the same utterances with noise at NOISY_SNR_DB


def _validation_chunk(task: tuple[UtteranceSource, int, int]) -> list[tuple[Example, Example]]:
    source, seed, count = task
    stream, rng = source("heldout", seed, False), np.random.default_rng(seed)
    out = []
    for _ in range(count):
        utt = next(stream)
        clean = featurize(utt)
        noisy_mel = log_mel(with_noise(utt.audio, NOISY_SNR_DB, rng)).astype(np.float16)[: len(clean.mel)]
        noisy = Example(noisy_mel, clean.controls, clean.visemes, clean.engine, clean.voice, clean.language)
        out.append((clean, noisy))
    return out


def build_validation(seed: int, count: int, workers: int = 1,
                     source: UtteranceSource = corpus_source) -> ValidationSet:
    """`count` held-out utterances, clean and noisy; the same for the same seed at any `workers`."""
    chunk = 10  # small tasks: held-out speech includes Piper, the slowest engine
    starts = range(0, count, chunk)
    tasks = [(source, seed * 7919 + i, min(chunk, count - start)) for i, start in enumerate(starts)]
    if workers <= 1:
        chunks = [_validation_chunk(t) for t in tasks]
    else:
        with worker_pool(workers) as pool:
            chunks = pool.map(_validation_chunk, tasks)
    items = [it for c in chunks for it in c]
    return ValidationSet([c for c, _ in items], [n for _, n in items])


def pad_for_windows(mel: np.ndarray, context_frames: int, lookahead_frames: int) -> np.ndarray:
    """Floor-value frames around `mel`, as the engine's stream has them, so output t is mel frame t's."""
    before = np.full((context_frames - 1, N_MELS), SILENCE_LOG_MEL, np.float32)
    after = np.full((lookahead_frames, N_MELS), SILENCE_LOG_MEL, np.float32)
    return np.concatenate([before, mel.astype(np.float32), after])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-8 or b.std() < 1e-8:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def best_lag_ms(pred: np.ndarray, truth: np.ndarray) -> float:
    """Shift (ms) of `pred` against `truth` with the highest correlation; > 0: prediction late."""
    lags = range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1)
    scores = [_corr(pred[max(k, 0) : len(pred) + min(k, 0)], truth[max(-k, 0) : len(truth) + min(-k, 0)])
              for k in lags]
    return float(list(lags)[int(np.nanargmax(scores))] * HOP_MS)


def displayed_jaw(frame_controls: np.ndarray) -> np.ndarray:
    """What a viewer sees, per mel frame: the engine's smoothed controls, each video frame held
    for its 40 ms (frame n shows while audio [40 n, 40 n + 40) ms plays). (N, 5) -> (4 N,)."""
    smoother = ControlSmoother()
    smoothed = np.stack([smoother.step(c) for c in frame_controls])
    return np.repeat(smoothed[:, JAW_OPEN], MEL_FRAMES_PER_VIDEO_FRAME)


def score(examples: list[Example], predict: SequencePredictor) -> dict[str, Any]:
    """Per-control correlation and viseme accuracy at each video frame's last hop."""
    preds = [predict(ex.mel.astype(np.float32)) for ex in examples]
    frame = MEL_FRAMES_PER_VIDEO_FRAME - 1  # the last hop of each video frame
    c_pred = np.concatenate([p[0][frame::MEL_FRAMES_PER_VIDEO_FRAME] for p in preds])
    c_true = np.concatenate([ex.controls[frame::MEL_FRAMES_PER_VIDEO_FRAME].astype(np.float32)
                             for ex in examples])
    v_pred = np.concatenate([p[1][frame::MEL_FRAMES_PER_VIDEO_FRAME].argmax(axis=1) for p in preds])
    v_true = np.concatenate([ex.visemes[frame::MEL_FRAMES_PER_VIDEO_FRAME] for ex in examples])
    jaw_pred = np.concatenate([p[0][:, JAW_OPEN] for p in preds])
    jaw_true = np.concatenate([ex.controls[:, JAW_OPEN].astype(np.float32) for ex in examples])
    shown = [displayed_jaw(p[0][frame::MEL_FRAMES_PER_VIDEO_FRAME]) for p in preds]
    shown_true = np.concatenate([ex.controls[: len(v), JAW_OPEN].astype(np.float32)
                                 for ex, v in zip(examples, shown, strict=True)])
    shown_pred = np.concatenate([v[: len(ex.controls)] for ex, v in zip(examples, shown, strict=True)])
    return {
        "correlation": {name: _corr(c_pred[:, i], c_true[:, i]) for i, name in enumerate(CONTROL_NAMES)},
        "mae": {name: float(np.abs(c_pred[:, i] - c_true[:, i]).mean())
                for i, name in enumerate(CONTROL_NAMES)},
        "viseme_accuracy": float((v_pred == v_true).mean()),
        "jaw_best_lag_ms": best_lag_ms(jaw_pred, jaw_true),
        "displayed_jaw_corr": _corr(shown_pred, shown_true),  # after the engine's smoothing, held frames
        "displayed_jaw_best_lag_ms": best_lag_ms(shown_pred, shown_true),
    }


def baseline_jaw_correlation(examples: list[Example]) -> float:
    model = BaselineMotionModel(40)
    pred, truth = [], []
    for ex in examples:
        mel = pad_for_windows(ex.mel, model.context_frames, model.lookahead_frames)
        offset = model.context_frames - 1  # padded index = mel frame + offset
        for n in range(len(ex.mel) // MEL_FRAMES_PER_VIDEO_FRAME):
            start, stop = video_frame_window(n, model.context_frames, model.lookahead_frames)
            pred.append(model.predict(mel[start + offset : stop + offset]).controls[JAW_OPEN])
            truth.append(float(ex.controls[MEL_FRAMES_PER_VIDEO_FRAME * (n + 1) - 1, JAW_OPEN]))
    return _corr(np.array(pred), np.array(truth))


def rest_check(predict: SequencePredictor) -> dict[str, float]:
    """Largest control over each of `quiet.PROBES` (silence, hiss, hum, breaths, blown air, pops...)."""
    from lipstream.training.quiet import PROBES

    return {name: float(predict(log_mel(make()))[0].max()) for name, make in PROBES.items()}
