"""TensorRTRunner: the motion model on an NVIDIA GPU, one engine per server, batched across sessions.

UNVERIFIED ON A GPU: written against the documented TensorRT 10 Python API (OnnxParser,
build_serialized_network, optimization profiles, set_tensor_address, execute_async_v3) and
cuda-python's driver API (`kernels/driver.py`, the one place CUDA statuses are checked); no GPU
exists where it was written. `benchmarks/gpu_check.sh` runs the `gpu`-marked tests that exercise
it on the first machine with one.

The ONNX file's batch dimension is dynamic; the engine gets one optimisation profile covering
batches 1..max_batch, uses fp16 kernels where the GPU has fast fp16 (inputs and outputs stay
float32; TensorRT 11 builds only strongly typed networks, so there the float32 model stays float32),
and is cached on disk under a key of GPU name, TensorRT version, model hash and
max_batch: building takes tens of seconds, loading a cached plan well under one. The memory and
stream live on the device's primary context, the one TensorRT's CUDA runtime calls use.
"""

import hashlib
import os
import re
import tempfile
import threading
import weakref
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.constants import N_MELS
from lipstream.engine.controls import N_CONTROLS, N_VISEMES
from lipstream.engine.runners import INPUT_NAME, OUTPUT_NAMES, RunnerOutput
from lipstream.errors import ModelError
from lipstream.kernels.build import bindings
from lipstream.kernels.driver import capability, check, current_context, device_name, open_device, release

FLOAT32_BYTES = 4
WORKSPACE_BYTES = 1 << 28  # 256 MiB: ample for a model of a few MB
OPT_BATCH = 8  # the batch TensorRT tunes its kernels for: a few sessions due in the same tick
FP16_MIN_MAJOR = 7  # compute capability: Volta and later run fp16 at twice fp32's rate or more
NO_TENSORRT = "the TensorRT runner needs 'pip install lipstream[gpu]' (tensorrt>=10, cuda-python)"


def plan_name(gpu: str, trt_version: str, onnx_bytes: bytes, max_batch: int) -> str:
    """The cache file for one (GPU, TensorRT, model, batch) combination: a plan runs only on them."""
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    model_hash = hashlib.sha256(onnx_bytes).hexdigest()[:16]
    return f"motion-{model_hash}-{gpu_slug}-trt{trt_version}-b{max_batch}.plan"


class TensorRTRunner:
    """TensorRT (>= 10) on one GPU. Thread-safe: sessions' threads share one runner."""

    def __init__(self, onnx_path: Path, window_frames: int, max_batch: int,
                 cache_dir: Path | None = None, device_index: int = 0) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise ModelError(f"{NO_TENSORRT}: {exc}") from exc
        self._trt, self._cu = trt, bindings()[0]
        self._device, self._context = open_device(self._cu, device_index)  # GpuError without a GPU
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.max_batch, self.window_frames = max_batch, window_frames
        self._lock = threading.Lock()  # one execution context and stream: one batch at a time
        self._buffers: dict[str, tuple[Any, int]] = {}  # tensor name -> (device pointer, bytes)
        with self._current():
            self._stream = check(self._cu, self._cu.cuStreamCreate(0), "create a stream")
        # frees the buffers and the stream with the runner (also if the rest of this fails)
        self._finalizer = weakref.finalize(self, release, self._cu, self._device, self._context,
                                           self._stream, self._buffers)
        self._finalizer.atexit = False  # at exit the driver frees everything
        self._open_engine(Path(onnx_path), cache_dir or default_cache_dir())

    def _open_engine(self, onnx_path: Path, cache_dir: Path) -> None:
        """The engine, its execution context and its bound device buffers, on this GPU."""
        with self._current():
            # TensorRT's object lifetimes: the runtime outlives its engine, the engine its context
            self._runtime, self._engine = self._load(onnx_path, cache_dir)
            self._execution = self._engine.create_execution_context()
            for name, width in self._widths().items():
                self._allocate(name, width)

    def close(self) -> None:
        """Free the engine, its device buffers and its stream now (else when it is collected)."""
        with self._lock:
            self._execution = self._engine = self._runtime = None  # in TensorRT's order
            self._finalizer()

    def _current(self) -> AbstractContextManager[None]:
        return current_context(self._cu, self._context)

    def _widths(self) -> dict[str, int]:
        """float32 values per batch item of each bound tensor."""
        return {INPUT_NAME: self.window_frames * N_MELS, OUTPUT_NAMES[0]: N_CONTROLS,
                OUTPUT_NAMES[1]: N_VISEMES}

    def _allocate(self, name: str, width: int) -> None:
        """Device memory for max_batch items, allocated once and bound to the tensor."""
        nbytes = self.max_batch * width * FLOAT32_BYTES
        pointer = check(self._cu, self._cu.cuMemAlloc(nbytes), f"allocate {nbytes} bytes")
        self._buffers[name] = (pointer, nbytes)
        if not self._execution.set_tensor_address(name, int(pointer)):
            raise ModelError(f"TensorRT refused a device address for tensor {name!r}; see its log above")

    def _load(self, onnx_path: Path, cache_dir: Path) -> tuple[Any, Any]:
        """(runtime, engine) from the cached plan; a plan missing, or one TensorRT cannot read
        (another process was writing it, or it is corrupt), is built now and cached."""
        onnx_bytes = onnx_path.read_bytes()
        gpu = device_name(self._cu, self._device)
        plan_path = cache_dir / plan_name(gpu, self._trt.__version__, onnx_bytes, self.max_batch)
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(plan_path.read_bytes()) if plan_path.is_file() else None
        if engine is None:
            plan = self._build(onnx_bytes, str(onnx_path))
            write_atomically(plan_path, plan)
            engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelError(f"TensorRT cannot load the engine it built from {onnx_path}; see its log above")
        _check_tensors(engine, str(onnx_path))
        return runtime, engine

    def _fp16_flag(self, builder: Any) -> Any:
        """BuilderFlag.FP16 where the GPU runs fp16 fast (TensorRT 10); None on TensorRT 11, which
        removed the flag with weak typing: the float32 ONNX model then builds and runs in float32."""
        flag = getattr(self._trt.BuilderFlag, "FP16", None)
        known = getattr(builder, "platform_has_fast_fp16", None)  # deprecated in 10, gone in 11
        fast = bool(known) if known is not None else capability(self._cu, self._device)[0] >= FP16_MIN_MAJOR
        return flag if fast else None

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
        if (fp16 := self._fp16_flag(builder)) is not None:
            config.set_flag(fp16)  # layers may run in fp16; I/O stays float32
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
        with self._lock, self._current():
            if not self._execution.set_input_shape(INPUT_NAME, host_in.shape):
                raise ModelError(f"TensorRT refused input shape {host_in.shape}; see its log above")
            self._copy_up(INPUT_NAME, host_in)
            if not self._execution.execute_async_v3(int(self._stream)):  # TensorRT takes the raw handle
                raise ModelError("TensorRT execution failed; see its log above")
            for name, host in outs.items():
                self._copy_down(name, host)
            check(self._cu, self._cu.cuStreamSynchronize(self._stream), "run the motion model")
        return RunnerOutput(outs[OUTPUT_NAMES[0]], outs[OUTPUT_NAMES[1]])

    def _copy_up(self, name: str, host: np.ndarray) -> None:
        check(self._cu, self._cu.cuMemcpyHtoDAsync(self._buffers[name][0], host.ctypes.data, host.nbytes,
                                                    self._stream), f"copy {name} to the device")

    def _copy_down(self, name: str, host: np.ndarray) -> None:
        check(self._cu, self._cu.cuMemcpyDtoHAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                                    self._stream), f"copy {name} from the device")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "lipstream"


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` so that no reader ever sees part of it: server processes (--workers) starting
    together each build the plan, and each must read a whole one or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".part", delete=False) as part:
        part.write(data)
    os.replace(part.name, path)


def _check_tensors(engine: Any, name: str) -> None:
    """The engine's I/O tensors are the ones this runner binds (the ONNX contract in runners.py)."""
    found = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if found != {INPUT_NAME, *OUTPUT_NAMES}:
        raise ModelError(f"{name} has tensors {sorted(found)}, the runner binds {INPUT_NAME!r} and "
                         f"{', '.join(map(repr, OUTPUT_NAMES))}: re-export it with 'lipstream train'")
