"""Runners execute the exported motion network; OnnxMotionModel wraps one as a MotionModel.

One small protocol, chosen once at start-up (STYLE #5): onnxruntime on a CPU, TensorRT on an
NVIDIA GPU, torch for training and evaluation. The model code never branches on the backend.
The exported network maps mel windows (B, T, N_MELS) to controls (B, N_CONTROLS) in [0, 1] and
viseme probabilities (B, N_VISEMES).

The file's metadata (JSON under METADATA_KEY in the ONNX `metadata_props`, mirrored in a sidecar
.json) carries the model's dimensions and the mel settings it was trained with; a file whose
settings do not match this engine is refused rather than run on the wrong features.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lipstream.engine.constants import HOP_SAMPLES, N_FFT, N_MELS, SAMPLE_RATE
from lipstream.engine.controls import IDENTITY, N_CONTROLS, N_VISEMES, Calibration, MotionOutput
from lipstream.engine.mel import LOG_FLOOR
from lipstream.errors import ModelError

METADATA_KEY = "lipstream"
MODEL_FORMAT = "lipstream.motion/1"  # bump when the input/output contract changes
INPUT_NAME = "mel"
OUTPUT_NAMES = ("controls", "visemes")
CPU_PROVIDERS = ("CPUExecutionProvider",)
CUDA_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # CPU: for any op CUDA lacks
DEFAULT_MAX_BATCH = 64  # windows per runner call: sessions one GPU carries, with room (docs/gpu.md)


def mel_settings() -> dict[str, float | int]:
    """The features this engine computes; a model must have been trained on the same."""
    return {"sample_rate": SAMPLE_RATE, "hop_samples": HOP_SAMPLES, "n_fft": N_FFT,
            "n_mels": N_MELS, "log_floor": LOG_FLOOR}


@dataclass(frozen=True)
class RunnerOutput:
    controls: np.ndarray  # (B, N_CONTROLS) float32 in [0, 1]
    visemes: np.ndarray  # (B, N_VISEMES) float32 probabilities


class Runner(Protocol):
    def run(self, mel_windows: np.ndarray) -> RunnerOutput:
        """mel_windows: (B, T, N_MELS) float32 log10 mel power."""
        ...


class OnnxRunner:
    """onnxruntime on the CPU, one thread: the engine runs one session per core."""

    def __init__(self, model: Path | bytes, threads: int = 1,
                 providers: tuple[str, ...] = CPU_PROVIDERS) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            name = model if isinstance(model, Path) else "model bytes"
            raise ModelError(f"cannot load motion model {name}: not a valid ONNX file ({exc})") from exc

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def input_shape(self) -> tuple[int | str | None, ...]:
        """The graph's mel input shape: ints where fixed, a name or None where dynamic."""
        return tuple(self.session.get_inputs()[0].shape)

    def run(self, mel_windows: np.ndarray) -> RunnerOutput:
        feed = {INPUT_NAME: np.ascontiguousarray(mel_windows, dtype=np.float32)}
        controls, visemes = self.session.run(list(OUTPUT_NAMES), feed)
        return RunnerOutput(np.asarray(controls, np.float32), np.asarray(visemes, np.float32))


class TorchRunner:
    """A torch module in eval mode (training and evaluation only; torch is an optional extra)."""

    def __init__(self, module: Any) -> None:
        import torch

        self._torch = torch
        self.module = module.eval()

    def run(self, mel_windows: np.ndarray) -> RunnerOutput:
        with self._torch.no_grad():
            controls, visemes = self.module(self._torch.from_numpy(np.ascontiguousarray(mel_windows)))
        return RunnerOutput(controls.numpy().astype(np.float32), visemes.numpy().astype(np.float32))


def read_metadata(path: Path) -> dict[str, Any]:
    """The model's metadata, from the ONNX file itself (the sidecar is for people and tools)."""
    return parse_metadata(OnnxRunner(path).metadata(), str(path))


def parse_metadata(props: dict[str, str], name: str) -> dict[str, Any]:
    if METADATA_KEY not in props:
        raise ModelError(f"{name} is not a lipstream motion model (no '{METADATA_KEY}' metadata); "
                         "export one with 'lipstream train'")
    try:
        meta: dict[str, Any] = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{name}: corrupt metadata ({exc}); re-export the model") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{name}: its '{METADATA_KEY}' metadata is not a JSON object; re-export the model")
    check_metadata(meta, name)
    return meta


def check_metadata(meta: dict[str, Any], name: str) -> None:
    if meta.get("format") != MODEL_FORMAT:
        raise ModelError(f"{name} has format {meta.get('format')!r}, this lipstream reads {MODEL_FORMAT!r}: "
                         "retrain it with this version's 'lipstream train'")
    if meta.get("mel") != mel_settings():
        raise ModelError(f"{name} was trained on mel settings {meta.get('mel')}, the engine computes "
                         f"{mel_settings()}: retrain it with this version's 'lipstream train'")
    outputs = meta.get("outputs", {})
    if outputs.get("controls") != N_CONTROLS or outputs.get("visemes") != N_VISEMES:
        raise ModelError(f"{name} predicts {outputs}, the engine expects {N_CONTROLS} controls and "
                         f"{N_VISEMES} visemes")
    for key, least in (("context_frames", 1), ("lookahead_frames", 0)):
        if type(meta.get(key)) is not int or meta[key] < least:  # not a bool, which is an int too
            raise ModelError(f"{name}: metadata lacks a valid '{key}'; re-export the model")
    calibration_of(meta, name)


def check_input_shape(shape: tuple[int | str | None, ...], window_frames: int, name: str) -> None:
    """The graph must take the (batch, window, mel bins) windows its metadata promises; a file whose
    metadata was edited or copied from another model would fail on the first frame instead."""
    fixed = [dim if isinstance(dim, int) else None for dim in shape]
    if len(shape) != 3 or fixed[1] not in (window_frames, None) or fixed[2] not in (N_MELS, None):
        raise ModelError(f"{name}: its graph takes mel input of shape {list(shape)}, its metadata promises "
                         f"(batch, {window_frames}, {N_MELS}); re-export the model with 'lipstream train'")


def calibration_of(meta: dict[str, Any], name: str) -> Calibration:
    """The control calibration in the metadata (identity if the file has none); a malformed one is refused."""
    entry = meta.get("calibration")
    if entry is None:
        return IDENTITY
    gain = entry.get("gain") if isinstance(entry, dict) else None
    offset = entry.get("offset") if isinstance(entry, dict) else None
    if gain is None or offset is None or not (_finite_list(gain) and _finite_list(offset)) or min(gain) <= 0:
        raise ModelError(f"{name}: its 'calibration' needs {N_CONTROLS} positive gains and {N_CONTROLS} "
                         "finite offsets; refit it with 'python -m lipstream.training.calibrate'")
    return Calibration(tuple(float(g) for g in gain), tuple(float(o) for o in offset))


def _finite_list(values: Any) -> bool:
    return (isinstance(values, list) and len(values) == N_CONTROLS
            and all(isinstance(v, int | float) and np.isfinite(v) for v in values))


class OnnxMotionModel:
    """The trained network as a MotionModel; its window size comes from the file's metadata.

    One model, and so one runner, can serve every session of a server: batched by `EngineGroup`
    (engines stepped together) or, in the server, by `batching.BatchingMotionModel`.
    """

    def __init__(self, path: Path, runner: Runner | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"motion model not found: {path} (use 'baseline' or an exported .onnx)")
        onnx_runner = OnnxRunner(path)
        self.metadata = parse_metadata(onnx_runner.metadata(), str(path))
        self.name = str(self.metadata.get("name", path.stem))
        self.context_frames: int = self.metadata["context_frames"]
        self.lookahead_frames: int = self.metadata["lookahead_frames"]
        self.window_frames = self.context_frames + self.lookahead_frames
        check_input_shape(onnx_runner.input_shape(), self.window_frames, str(path))
        self.runner: Runner = runner or onnx_runner
        self.calibration = calibration_of(self.metadata, str(path))

    def predict(self, window: np.ndarray) -> MotionOutput:
        return self.predict_batch(window[None])[0]

    def predict_batch(self, windows: np.ndarray) -> list[MotionOutput]:
        """windows: (B, T, N_MELS), one per session -> one output per window, in order."""
        expected = (self.context_frames + self.lookahead_frames, N_MELS)
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(f"mel windows of shape {windows.shape}, model {self.name} takes "
                             f"(B, *{expected})")
        out = self.runner.run(windows)
        return [MotionOutput(controls=self.calibration.apply(out.controls[i]), visemes=out.visemes[i])
                for i in range(len(windows))]
