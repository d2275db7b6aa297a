"""TensorRTRunner: the motion model on an NVIDIA GPU, one engine per server, batched across sessions.

UNVERIFIED ON A GPU: written against the documented TensorRT 10 Python API (OnnxParser,
build_serialized_network, optimization profiles, set_tensor_address, execute_async_v3) and
cuda-python's runtime API; no GPU exists where it was written. `benchmarks/gpu_check.sh` runs the
`gpu`-marked tests that exercise it on the first machine with one.

The ONNX file's batch dimension is dynamic; the engine gets one optimisation profile covering
batches 1..max_batch, uses fp16 kernels where the GPU has fast fp16 (inputs and outputs stay
float32), and is cached on disk under a key of GPU name, TensorRT version, model hash and
max_batch: building takes tens of seconds, loading a cached plan well under one.
"""

import hashlib
import re
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.constants import N_MELS
from lipstream.engine.controls import N_CONTROLS, N_VISEMES
from lipstream.engine.runners import INPUT_NAME, OUTPUT_NAMES, RunnerOutput
from lipstream.errors import ModelError

FLOAT32_BYTES = 4
WORKSPACE_BYTES = 1 << 28  # 256 MiB: ample for a model of a few MB
OPT_BATCH = 8  # the batch TensorRT tunes its kernels for: a few sessions due in the same tick
FP16_MIN_MAJOR = 7  # compute capability: Volta and later run fp16 at twice fp32's rate or more
NO_GPU = "no CUDA GPU visible to the TensorRT runner: check the NVIDIA driver, or use --device cpu"
NO_TENSORRT = "the TensorRT runner needs 'pip install lipstream[gpu]' (tensorrt>=10, cuda-python)"


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


def _cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python calls return (error, *values); raise on anything but success."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise ModelError(f"CUDA error in {what}: {err}; check the driver and that a GPU is visible")
    return values[0] if len(values) == 1 else values


def _require_gpu(cudart: Any) -> None:
    try:
        count = _cuda_check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except ModelError:
        raise
    except Exception as exc:  # no driver library: the bindings raise loader errors, not a status
        raise ModelError(NO_GPU) from exc
    if count == 0:
        raise ModelError(NO_GPU)


def plan_name(gpu: str, trt_version: str, onnx_bytes: bytes, max_batch: int) -> str:
    """The cache file for one (GPU, TensorRT, model, batch) combination: a plan runs only on them."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    model_hash = hashlib.sha256(onnx_bytes).hexdigest()[:16]
    return f"motion-{model_hash}-{gpu_slug}-trt{trt_version}-b{max_batch}.plan"


class TensorRTRunner:
    """TensorRT (>= 10) on GPU 0. Thread-safe: sessions' threads share one runner."""

    def __init__(self, onnx_path: Path, window_frames: int, max_batch: int,
                 cache_dir: Path | None = None) -> None:
        try:
            import tensorrt as trt

            cudart = _import_cudart()
        except ImportError as exc:
            raise ModelError(f"{NO_TENSORRT}: {exc}") from exc
        _require_gpu(cudart)
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch, self.window_frames = max_batch, window_frames
        self._lock = threading.Lock()  # one execution context and stream: one batch at a time
        plan = self._plan(Path(onnx_path), cache_dir or Path.home() / ".cache" / "lipstream")
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(f"TensorRT could not load the cached plan for {onnx_path}; delete the cache")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers = {name: self._allocate(name, width) for name, width in self._widths().items()}
        # free the device memory and stream with the runner; at exit the driver frees everything
        self._finalizer = weakref.finalize(self, _release, cudart, self._stream, list(self._buffers.values()))
        self._finalizer.atexit = False

    def close(self) -> None:
        self._finalizer()

    def _widths(self) -> dict[str, int]:
        """float32 values per batch item of each bound tensor."""
        return {INPUT_NAME: self.window_frames * N_MELS, OUTPUT_NAMES[0]: N_CONTROLS,
                OUTPUT_NAMES[1]: N_VISEMES}

    def _allocate(self, name: str, width: int) -> int:
        """Device memory for max_batch items, allocated once and bound to the tensor."""
        nbytes = self.max_batch * width * FLOAT32_BYTES
        pointer = int(_cuda_check(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self._context.set_tensor_address(name, pointer)
        return pointer

    def _properties(self) -> Any:
        return _cuda_check(self._cudart, self._cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")

    def _gpu_name(self) -> str:
        name = self._properties().name
        return (name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)).strip()

    def _fast_fp16(self, builder: Any) -> bool:
        """TensorRT's own answer where it still gives one (deprecated in 10), else Volta or newer."""
        known = getattr(builder, "platform_has_fast_fp16", None)
        return bool(known) if known is not None else int(self._properties().major) >= FP16_MIN_MAJOR

    def _plan(self, onnx_path: Path, cache_dir: Path) -> bytes:
        onnx_bytes = onnx_path.read_bytes()
        plan_path = cache_dir / plan_name(self._gpu_name(), self._trt.__version__, onnx_bytes, self.max_batch)
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
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self._fast_fp16(builder):
            config.set_flag(trt.BuilderFlag.FP16)  # layers may run in fp16; I/O stays float32
        config.add_optimization_profile(self._profile(builder))
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ModelError(f"TensorRT failed to build an engine from {name}; see its log above")
        return bytes(plan)

    def _profile(self, builder: Any) -> Any:
        """Batches 1..max_batch, tuned for OPT_BATCH (or max_batch when smaller)."""
        profile = builder.create_optimization_profile()
        shape = (self.window_frames, N_MELS)
        profile.set_shape(INPUT_NAME, (1, *shape), (min(OPT_BATCH, self.max_batch), *shape),
                          (self.max_batch, *shape))
        return profile

    def run(self, mel_windows: np.ndarray) -> RunnerOutput:
        batch = mel_windows.shape[0]
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch of {batch} windows: this runner takes 1 to {self.max_batch}")
        host_in = np.ascontiguousarray(mel_windows, dtype=np.float32)
        outs = {OUTPUT_NAMES[0]: np.empty((batch, N_CONTROLS), np.float32),
                OUTPUT_NAMES[1]: np.empty((batch, N_VISEMES), np.float32)}
        with self._lock:
            self._context.set_input_shape(INPUT_NAME, host_in.shape)
            self._copy(self._buffers[INPUT_NAME], host_in.ctypes.data, host_in.nbytes, to_device=True)
            if not self._context.execute_async_v3(int(self._stream)):  # TensorRT takes the raw handle
                raise ModelError("TensorRT execution failed; see its log above")
            for name, host in outs.items():
                self._copy(host.ctypes.data, self._buffers[name], host.nbytes, to_device=False)
            _cuda_check(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "synchronise")
        return RunnerOutput(outs[OUTPUT_NAMES[0]], outs[OUTPUT_NAMES[1]])

    def _copy(self, dst: int, src: int, nbytes: int, to_device: bool) -> None:
        kinds = self._cudart.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_device else kinds.cudaMemcpyDeviceToHost
        _cuda_check(self._cudart, self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream),
                    "cudaMemcpyAsync")


def _release(cudart: Any, stream: Any, buffers: list[int]) -> None:
    for pointer in buffers:
        cudart.cudaFree(pointer)
    cudart.cudaStreamDestroy(stream)
