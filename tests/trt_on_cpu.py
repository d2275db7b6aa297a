"""A CPU stand-in for TensorRT 10 and cuda-python's driver API, enough to run `TensorRTRunner`'s host
code (plan cache, optimisation profile, fp16 flag, device buffers, copies, execution) without a GPU.

"Device memory" is host memory reached by address, so the runner's copies really move bytes; the
"engine" runs the ONNX file it was built from on onnxruntime, and refuses input shapes outside its
optimisation profile as TensorRT does. Like tests/cuda_on_cpu.py for the kernels: it checks our
code against the documented API, not TensorRT itself (the `gpu`-marked tests do that).
"""

import ctypes
import json
import weakref
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipstream.engine.runners import OnnxRunner

PLAN_MAGIC = b"standin-plan\n"


class Stream:
    """cuda-python's CUstream: an object, not an int; int() gives the raw handle."""

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class CudaDriver:
    """cuda-python's driver module, the calls the runner makes (through kernels/driver.py): every
    call returns (status, *values). Counts what is held, so a test sees what is freed."""

    CUdevice_attribute = SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR="major",
                                         CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR="minor")

    def __init__(self, gpu_name: bytes = b"NVIDIA Stand-in 80GB", major: int = 9) -> None:
        self.memory: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.name, self.attributes = gpu_name, {"major": major, "minor": 0}
        self.streams_destroyed = 0
        self.contexts_held = 0  # primary context retains not yet released
        self.devices = 1

    def cuInit(self, flags: int) -> tuple[int]:
        return (0,)

    def cuDeviceGetCount(self) -> tuple[int, int]:
        return 0, self.devices

    def cuDeviceGet(self, index: int) -> tuple[int, int]:
        return 0, index

    def cuDeviceGetName(self, length: int, device: int) -> tuple[int, bytes]:
        return 0, self.name + b"\0" * (length - len(self.name))

    def cuDeviceGetAttribute(self, attribute: str, device: int) -> tuple[int, int]:
        return 0, self.attributes[attribute]

    def cuDevicePrimaryCtxRetain(self, device: int) -> tuple[int, str]:
        self.contexts_held += 1
        return 0, "context"

    def cuDevicePrimaryCtxRelease(self, device: int) -> tuple[int]:
        self.contexts_held -= 1
        return (0,)

    def cuCtxPushCurrent(self, context: str) -> tuple[int]:
        return (0,)

    def cuCtxPopCurrent(self) -> tuple[int, str]:
        return 0, "context"

    def cuStreamCreate(self, flags: int) -> tuple[int, Stream]:
        return 0, Stream(7)

    def cuMemAlloc(self, nbytes: int) -> tuple[int, int]:
        block = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cuMemcpyHtoDAsync(self, device: int, host: int, nbytes: int, stream: Stream) -> tuple[int]:
        assert len(self.memory[device]) >= nbytes, "copy past the end of a device buffer"
        ctypes.memmove(device, host, nbytes)
        return (0,)

    def cuMemcpyDtoHAsync(self, host: int, device: int, nbytes: int, stream: Stream) -> tuple[int]:
        assert len(self.memory[device]) >= nbytes, "copy past the end of a device buffer"
        ctypes.memmove(host, device, nbytes)
        return (0,)

    def cuStreamSynchronize(self, stream: Stream) -> tuple[int]:
        return (0,)

    def cuMemFree(self, pointer: int) -> tuple[int]:
        del self.memory[pointer]
        return (0,)

    def cuStreamDestroy(self, stream: Stream) -> tuple[int]:
        self.streams_destroyed += 1
        return (0,)


class TensorRT:
    """The `tensorrt` module's surface that TensorRTRunner uses."""

    __version__ = "10.0.0"
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16")

    def __init__(self, driver: CudaDriver, version: str = __version__) -> None:
        self.driver = driver
        self.__version__ = version
        self.builds = 0
        trt = self

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                self.level = level

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> dict[str, Any]:
                return {}

            def create_builder_config(self) -> dict[str, Any]:
                return Config()

            def create_optimization_profile(self) -> "Profile":
                return Profile()

            def build_serialized_network(self, network: dict[str, Any], config: "Config") -> bytes:
                trt.builds += 1
                header = {"profiles": [p.shapes for p in config.profiles], "flags": sorted(config.flags)}
                onnx: bytes = network["onnx"]
                return PLAN_MAGIC + json.dumps(header).encode() + b"\n" + onnx

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: dict[str, Any], logger: Any) -> None:
                self.network = network

            def parse(self, onnx: bytes) -> bool:
                self.network["onnx"] = onnx
                return True

        class Runtime:
            def __init__(self, logger: Any) -> None:
                pass

            def deserialize_cuda_engine(self, plan: bytes) -> "Engine | None":
                if not plan.startswith(PLAN_MAGIC):
                    return None
                header, onnx = plan[len(PLAN_MAGIC):].split(b"\n", 1)
                return Engine(json.loads(header), onnx, self)

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, OnnxParser, Runtime
        if version.split(".")[0] != "10":  # TensorRT 11 removed weak typing: no FP16 flag or query
            self.BuilderFlag = SimpleNamespace()
            del Builder.platform_has_fast_fp16


class Config(dict):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__()
        self.flags: set[str] = set()
        self.profiles: list[Profile] = []
        self.pool_limits: dict[str, int] = {}

    def set_memory_pool_limit(self, pool: str, nbytes: int) -> None:
        self.pool_limits[pool] = nbytes

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: "Profile") -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]) -> None:
        self.shapes[name] = [list(low), list(opt), list(high)]


class Engine:
    """TensorRT's documented object lifetimes: the runtime that made an engine must outlive it
    (the real one may crash; this one says so)."""

    num_io_tensors = 3

    def __init__(self, header: dict[str, Any], onnx: bytes, runtime: Any) -> None:
        self.header = header
        self.onnx = onnx
        self._runtime = weakref.ref(runtime)

    def get_tensor_name(self, index: int) -> str:
        return ("mel", "controls", "visemes")[index]

    def create_execution_context(self) -> "Context":
        return Context(self)

    def check_alive(self) -> None:
        assert self._runtime() is not None, "the TensorRT runtime was destroyed before its engine"


class Context:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] | None = None
        self.runner = OnnxRunner(engine.onnx)

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """False for a shape outside the optimisation profile, as TensorRT answers (and logs)."""
        low, _, high = self.engine.header["profiles"][0][name]
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int), "TensorRT takes the stream's raw handle"
        self.engine.check_alive()
        assert self.shape is not None, "set_input_shape before execute"
        windows = _at(self.addresses["mel"], self.shape)
        out = self.runner.run(windows)
        for name, values in (("controls", out.controls), ("visemes", out.visemes)):
            ctypes.memmove(self.addresses[name], values.ctypes.data, values.nbytes)
        return True


def _at(pointer: int, shape: tuple[int, ...]) -> NDArray[np.float32]:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(pointer)).reshape(shape).copy()
