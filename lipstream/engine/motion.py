"""MotionModel: a mel window -> mouth controls (and viseme probabilities, where a model has them).

Implementations: the signal-processing baseline below, and the trained network run by a Runner
(`lipstream.engine.runners`). `load_motion_model` picks one at start-up; the engine never
branches on which.
"""

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lipstream.engine.constants import HOP_MS, MEL_FRAMES_PER_VIDEO_FRAME, N_FFT, SAMPLE_RATE
from lipstream.engine.controls import JAW_OPEN, LIP_ROUND, LIP_SPREAD, LIP_TUCK, N_CONTROLS, MotionOutput
from lipstream.engine.device import ONNX_CPU, ONNX_CUDA, TENSORRT
from lipstream.errors import ModelError

if TYPE_CHECKING:
    from lipstream.engine.runners import Runner

SHIPPED_MODEL = "motion.onnx"  # inside lipstream/models/


class MotionModel(Protocol):
    """Maps the mel window of one video frame to mouth controls."""

    name: str
    context_frames: int  # mel frames up to and including the video frame's own last hop
    lookahead_frames: int  # mel frames after it: the model's share of the pipeline latency

    def predict(self, window: np.ndarray) -> MotionOutput:
        """window: (context_frames + lookahead_frames, N_MELS) log10 mel power."""
        ...

    def predict_batch(self, windows: np.ndarray) -> list[MotionOutput]:
        """windows: (B, T, N_MELS), e.g. one per session -> B outputs, each as `predict` gives it."""
        ...


def _band(lo_hz: float, hi_hz: float) -> slice:
    """Mel bins whose centres lie in [lo_hz, hi_hz), from the filterbank's peaks."""
    from lipstream.engine.mel import mel_filterbank

    peaks_hz = mel_filterbank().argmax(axis=0) * SAMPLE_RATE / N_FFT
    idx = np.flatnonzero((peaks_hz >= lo_hz) & (peaks_hz < hi_hz))
    return slice(int(idx[0]), int(idx[-1]) + 1)


class BaselineMotionModel:
    """Transparent signal processing, the yardstick the trained model must beat.

    Loudness opens the jaw; the balance of low (F1 region) to mid (F2 region) energy decides
    between rounded ("oo") and spread ("ee") lips; strong high-band energy over a weak low band
    (fricatives) tucks the lower lip a little. It cannot see closures, so `lip_press` stays 0.
    """

    name = "baseline"
    context_frames = MEL_FRAMES_PER_VIDEO_FRAME

    # Calibrated on speech normalised to about -20 dBFS (see benchmarks/lipsync.py).
    floor_db = -35.0  # level (dB re the mel power of a full-scale sine) at which the jaw starts to open
    range_db = 35.0  # dB above the floor at which it is fully open

    def __init__(self, lookahead_ms: int = 40) -> None:
        self.lookahead_frames = lookahead_ms // HOP_MS
        self._voice = _band(250, 4000)
        self._low = _band(250, 900)
        self._mid = _band(1500, 3500)
        self._high = _band(4000, 8000)

    def predict(self, window: np.ndarray) -> MotionOutput:
        frames = window[-(MEL_FRAMES_PER_VIDEO_FRAME + self.lookahead_frames) :]
        power = (10.0**frames.astype(np.float64)).mean(axis=0)  # (N_MELS,)
        level_db = 10 * np.log10(power[self._voice].sum() + 1e-10) - FULL_SCALE_DB
        voiced = np.clip((level_db - self.floor_db) / self.range_db, 0.0, 1.0)
        low, mid, high = (power[b].sum() + 1e-10 for b in (self._low, self._mid, self._high))
        tilt = np.log10(mid / low)  # > 0: energy up in F2 (spread); < 0: down in F1 (round)
        controls = np.zeros(N_CONTROLS, np.float32)
        controls[JAW_OPEN] = voiced
        controls[LIP_SPREAD] = voiced * np.clip(tilt + 0.5, 0.0, 1.0)
        controls[LIP_ROUND] = voiced * np.clip(-tilt - 0.8, 0.0, 1.0)
        fricative = np.clip(np.log10(high / low) - 0.5, 0.0, 1.0)
        controls[LIP_TUCK] = 0.3 * fricative * (1.0 - voiced)
        return MotionOutput(controls=controls)

    def predict_batch(self, windows: np.ndarray) -> list[MotionOutput]:
        return [self.predict(window) for window in windows]  # no network: nothing to share


def _full_scale_db() -> float:
    """Mel-band power (dB) of a full-scale 1 kHz sine, the reference for `floor_db`."""
    from lipstream.engine.mel import log_mel

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    mel = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    return float(10 * np.log10((10.0 ** mel[10:].astype(np.float64)).sum(axis=1).mean()))


FULL_SCALE_DB = _full_scale_db()


def shipped_model_path() -> Path | None:
    path = Path(str(resources.files("lipstream.models").joinpath(SHIPPED_MODEL)))
    return path if path.is_file() else None


def load_motion_model(spec: str | None = None, lookahead_ms: int | None = None,
                      backend: str = ONNX_CPU) -> MotionModel:
    """`None`: the shipped trained model (the baseline if none is installed); "baseline";
    or a path to an exported .onnx file, run by `backend` (a runner named in `device`)."""
    if spec == "baseline":
        return BaselineMotionModel(lookahead_ms if lookahead_ms is not None else 40)
    path = Path(spec) if spec is not None else shipped_model_path()
    if path is None:
        return BaselineMotionModel(lookahead_ms if lookahead_ms is not None else 40)
    if not path.is_file():
        raise ModelError(f"motion model not found: {path} (use 'baseline' or an exported .onnx)")
    return _onnx_model(path, backend)


def _onnx_model(path: Path, backend: str) -> MotionModel:
    from lipstream.engine.runners import OnnxMotionModel

    model = OnnxMotionModel(path)  # reads and checks the file's contract on the CPU runner
    if backend == ONNX_CPU:
        return model
    return OnnxMotionModel(path, make_runner(backend, path, model.window_frames))


def make_runner(backend: str, path: Path, window_frames: int) -> "Runner":
    """The runner named `backend` for the model at `path`; GPU runtimes are imported only here."""
    from lipstream.engine.runners import CUDA_PROVIDERS, DEFAULT_MAX_BATCH, OnnxRunner

    if backend == ONNX_CPU:
        return OnnxRunner(path)
    if backend == ONNX_CUDA:
        return OnnxRunner(path, providers=CUDA_PROVIDERS)
    if backend == TENSORRT:
        from lipstream.engine.trt_runner import TensorRTRunner

        return TensorRTRunner(path, window_frames, DEFAULT_MAX_BATCH)
    raise ModelError(f"unknown model runner {backend!r}: use {ONNX_CPU}, {ONNX_CUDA} or {TENSORRT}")
