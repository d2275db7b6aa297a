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

    def __init__(self, model: Path | bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            name = model if isinstance(model, Path) else "model bytes"
            raise ModelError(f"cannot load motion model {name}: not a valid ONNX file ({exc})") from exc

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

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
    for key in ("context_frames", "lookahead_frames"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise ModelError(f"{name}: metadata lacks a valid '{key}'; re-export the model")
    calibration_of(meta, name)


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
    """The trained network as a MotionModel; its window size comes from the file's metadata."""

    def __init__(self, path: Path, runner: Runner | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"motion model not found: {path} (use 'baseline' or an exported .onnx)")
        onnx_runner = OnnxRunner(path)
        self.metadata = parse_metadata(onnx_runner.metadata(), str(path))
        self.runner: Runner = runner if runner is not None else onnx_runner
        self.name = str(self.metadata.get("name", path.stem))
        self.context_frames: int = self.metadata["context_frames"]
        self.lookahead_frames: int = self.metadata["lookahead_frames"]
        self.calibration = calibration_of(self.metadata, str(path))

    def predict(self, window: np.ndarray) -> MotionOutput:
        expected = (self.context_frames + self.lookahead_frames, N_MELS)
        if window.shape != expected:
            raise ValueError(f"mel window of shape {window.shape}, model {self.name} takes {expected}")
        out = self.runner.run(window[None])
        return MotionOutput(controls=self.calibration.apply(out.controls[0]), visemes=out.visemes[0])


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


def _cuda_check(result: Any, what: str) -> Any:
    """cuda-python calls return (error, *values); raise on anything but success."""
    cudart = _import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise ModelError(f"CUDA error in {what}: {err}; check the driver and that a GPU is visible")
    return values[0] if len(values) == 1 else values


class TensorRTRunner:
    """TensorRT (>= 10) on an NVIDIA GPU, via cuda-python's `cudart`.

    UNVERIFIED: written against the documented TensorRT 10 Python API (OnnxParser,
    build_serialized_network, set_tensor_address, execute_async_v3); no GPU exists on the
    machines this was written on, so it has never run. The engine plan is built once from the
    ONNX file and cached under `cache_dir`, keyed by the file's hash, TensorRT version and batch.
    """

    def __init__(self, onnx_path: Path, window_frames: int, max_batch: int = 64,
                 cache_dir: Path | None = None) -> None:
        try:
            import tensorrt as trt

            cudart = _import_cudart()
        except ImportError as exc:
            raise ModelError("the TensorRT runner needs 'pip install lipstream[gpu]' (tensorrt>=10, "
                             f"cuda-python) and an NVIDIA GPU: {exc}") from exc
        count = _cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count == 0:
            raise ModelError("no CUDA GPU found: use the onnxruntime runner on this machine")
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch, self.window_frames = max_batch, window_frames
        plan = self._plan(Path(onnx_path), cache_dir or Path.home() / ".cache" / "lipstream")
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(f"TensorRT could not load the cached plan for {onnx_path}; delete the cache")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, int] = {}
        for name, width in ((INPUT_NAME, window_frames * N_MELS), (OUTPUT_NAMES[0], N_CONTROLS),
                            (OUTPUT_NAMES[1], N_VISEMES)):
            self._buffers[name] = _cuda_check(cudart.cudaMalloc(max_batch * width * 4), "cudaMalloc")
            self._context.set_tensor_address(name, self._buffers[name])

    def _plan(self, onnx_path: Path, cache_dir: Path) -> bytes:
        import hashlib

        onnx_bytes = onnx_path.read_bytes()
        key = hashlib.sha256(onnx_bytes).hexdigest()[:16]
        plan_path = cache_dir / f"motion-{key}-trt{self._trt.__version__}-b{self.max_batch}.plan"
        if plan_path.is_file():
            return plan_path.read_bytes()
        plan = self._build(onnx_bytes, str(onnx_path))
        cache_dir.mkdir(parents=True, exist_ok=True)
        plan_path.write_bytes(plan)
        return plan

    def _build(self, onnx_bytes: bytes, name: str) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"TensorRT cannot parse {name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
        profile = builder.create_optimization_profile()
        shape = (self.window_frames, N_MELS)
        profile.set_shape(INPUT_NAME, (1, *shape), (min(8, self.max_batch), *shape), (self.max_batch, *shape))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ModelError(f"TensorRT failed to build an engine from {name}; see its log above")
        return bytes(plan)

    def run(self, mel_windows: np.ndarray) -> RunnerOutput:
        cudart = self._cudart
        batch = mel_windows.shape[0]
        if batch > self.max_batch:
            raise ValueError(f"batch of {batch} windows exceeds this runner's max_batch={self.max_batch}")
        host_in = np.ascontiguousarray(mel_windows, dtype=np.float32)
        outs = {OUTPUT_NAMES[0]: np.empty((batch, N_CONTROLS), np.float32),
                OUTPUT_NAMES[1]: np.empty((batch, N_VISEMES), np.float32)}
        self._context.set_input_shape(INPUT_NAME, host_in.shape)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda_check(cudart.cudaMemcpyAsync(self._buffers[INPUT_NAME], host_in.ctypes.data, host_in.nbytes,
                                           h2d, self._stream), "cudaMemcpyAsync")
        if not self._context.execute_async_v3(self._stream):
            raise ModelError("TensorRT execution failed; see its log above")
        for name, host in outs.items():
            _cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name], host.nbytes, d2h,
                                               self._stream), "cudaMemcpyAsync")
        _cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return RunnerOutput(outs[OUTPUT_NAMES[0]], outs[OUTPUT_NAMES[1]])
