"""cuda-python's driver API, the one way lipstream talks to a GPU: every CUDA status is checked by
`check`, every device is opened on its primary context by `open_device`.

The warp kernels (`cuda.py`), the whole-frame renderer (`device_render.py`), the device probe
(`engine/device.py`) and the TensorRT runner (`engine/trt_runner.py`) all go through here. The
primary context is the one the CUDA runtime (and so TensorRT and onnxruntime's CUDA provider) uses
on the same device, so the memory and streams made here are valid in their calls too.

Importing this module needs neither cuda-python nor a GPU.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lipstream.errors import GpuError

NO_DEVICE = "no CUDA device: install the NVIDIA driver and 'pip install lipstream[gpu]'"
GPU_NAME_BYTES = 256  # cuDeviceGetName's buffer; real names are ~30 characters


def check(cu: Any, result: tuple[Any, ...], what: str) -> Any:
    """The value of a driver call that returns (CUresult, value) or (CUresult,); GpuError saying
    what failed otherwise."""
    status = result[0]
    if status != 0:
        raise GpuError(f"CUDA failed to {what}: {getattr(status, 'name', status)}")
    return result[1] if len(result) > 1 else None


def open_device(cu: Any, device_index: int = 0) -> tuple[Any, Any]:
    """(device, its primary context, retained) for CUDA device `device_index`; GpuError if none."""
    try:
        check(cu, cu.cuInit(0), "initialise")
        count = check(cu, cu.cuDeviceGetCount(), "count devices")
    except Exception as err:  # no libcuda: the bindings raise their own loader errors, not a status
        raise GpuError(NO_DEVICE) from err
    if count <= device_index:
        raise GpuError(NO_DEVICE if count == 0 else
                       f"no CUDA device {device_index}: this machine has {count} (0 to {count - 1})")
    device = check(cu, cu.cuDeviceGet(device_index), "open the device")
    return device, check(cu, cu.cuDevicePrimaryCtxRetain(device), "open the device's context")


def device_name(cu: Any, device: Any) -> str:
    """The device's marketing name, e.g. "NVIDIA L4"."""
    name = check(cu, cu.cuDeviceGetName(GPU_NAME_BYTES, device), "read the device's name")
    return bytes(name).split(b"\0")[0].decode(errors="replace").strip()


def capability(cu: Any, device: Any) -> tuple[int, int]:
    """The device's compute capability (major, minor), e.g. (8, 9) for an L4."""
    attribute = cu.CUdevice_attribute
    major = check(cu, cu.cuDeviceGetAttribute(
        attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "read the device")
    minor = check(cu, cu.cuDeviceGetAttribute(
        attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device), "read the device")
    return int(major), int(minor)


@contextmanager
def current_context(cu: Any, context: Any) -> Iterator[None]:
    """The device's context current on this thread (renderers may run on executor threads)."""
    check(cu, cu.cuCtxPushCurrent(context), "make the context current")
    try:
        yield
    finally:
        cu.cuCtxPopCurrent()


def release(cu: Any, device: Any, context: Any, stream: Any, buffers: dict[str, tuple[Any, int]]) -> None:
    """Free a user's device buffers (role -> (pointer, bytes)) and stream, and let go of the
    context. Statuses are not checked: this runs from finalizers, where nothing can be done."""
    cu.cuCtxPushCurrent(context)
    for pointer, _ in buffers.values():
        cu.cuMemFree(pointer)
    buffers.clear()
    cu.cuStreamDestroy(stream)
    cu.cuCtxPopCurrent()
    cu.cuDevicePrimaryCtxRelease(device)
