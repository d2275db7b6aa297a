"""CUDA kernels: warp.cu, built by NVRTC for this GPU, launched through cuda-python's driver API.

One `CudaKernels` per renderer. It runs on the device's primary context (shared by every instance in
the process, as is the compiled module), has its own stream, and keeps its device buffers between
frames: each grows to the largest region it has seen and is then reused, so a steady stream of
frames allocates nothing. Per call: copy the inputs up, launch one thread per pixel of the region,
copy the region back. The photo is uploaded once while the same read-only array (an Avatar's image)
is passed in again.

Importing this module needs neither cuda-python nor a GPU; constructing `CudaKernels` needs both and
raises `GpuError` with what to install otherwise.
"""

import threading
import weakref
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipstream.kernels.build import WARP, Program, bindings, choose_target, compile_kernels, supported_archs
from lipstream.kernels.driver import capability, check, current_context, open_device, release

WARP_BLOCK = (16, 16)  # threads per block over the region's (x, y): 256, eight 32-thread warps
COMPOSITE_BLOCK = 256  # threads per block over the region's pixels, flattened

_MODULES: dict[tuple[int, str], tuple[Any, ...]] = {}  # (device ordinal, program) -> its CUfunctions
_MODULES_LOCK = threading.Lock()


class CudaKernels:
    name = "cuda"

    def __init__(self, device_index: int = 0) -> None:
        self._cu, nvrtc = bindings()
        self._device, self._context = open_device(self._cu, device_index)
        with self._current():
            self._warp_fn, self._composite_fn = _kernels_for(self._cu, nvrtc, device_index)
            self._stream = check(self._cu, self._cu.cuStreamCreate(0), "create a stream")
        self._buffers: dict[str, tuple[Any, int]] = {}  # role -> (device pointer, bytes)
        self._photo: NDArray[Any] | None = None  # the read-only source now resident in "src"
        self._lock = threading.Lock()  # one frame's copies and launches at a time on the stream
        # free the stream and buffers when the renderer goes; at exit the driver frees everything
        self._finalizer = weakref.finalize(self, release, self._cu, self._device, self._context,
                                           self._stream, self._buffers)
        self._finalizer.atexit = False

    def warp_region(self, src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None:
        _check_warp_shapes(src, coords, out)
        h, w = out.shape[:2]
        if h == 0 or w == 0:
            return
        with self._lock, self._current():
            d_src = self._upload_photo(src)
            d_coords = self._upload("coords", np.ascontiguousarray(coords, dtype=np.float32))
            d_out = self._buffer("pixels", out.nbytes)
            grid = (_blocks(w, WARP_BLOCK[0]), _blocks(h, WARP_BLOCK[1]))
            self._launch(self._warp_fn, grid, WARP_BLOCK,
                         [_ptr(d_src), _i32(src.shape[0]), _i32(src.shape[1]), _ptr(d_coords),
                          _ptr(d_out), _i32(h), _i32(w)])
            self._download(d_out, out)

    def composite(self, out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None:
        _check_composite_shapes(out, colour, alpha)
        n_pixels = out.shape[0] * out.shape[1]
        if n_pixels == 0:
            return
        with self._lock, self._current():
            d_out = self._upload("pixels", np.ascontiguousarray(out))
            d_colour = self._upload("colour", np.ascontiguousarray(colour, dtype=np.float32))
            d_alpha = self._upload("alpha", np.ascontiguousarray(alpha, dtype=np.float32))
            grid = (_blocks(n_pixels, COMPOSITE_BLOCK), 1)
            self._launch(self._composite_fn, grid, (COMPOSITE_BLOCK, 1),
                         [_ptr(d_out), _ptr(d_colour), _ptr(d_alpha), _i32(n_pixels)])
            self._download(d_out, out)

    def close(self) -> None:
        """Free this instance's stream and device buffers now (otherwise when it is collected)."""
        self._finalizer()

    def _current(self) -> AbstractContextManager[None]:
        return current_context(self._cu, self._context)

    def _buffer(self, role: str, nbytes: int) -> Any:
        """A device buffer of at least nbytes for this role, grown only when a region is larger."""
        held = self._buffers.get(role)
        if held is None or held[1] < nbytes:
            if held is not None:
                check(self._cu, self._cu.cuMemFree(held[0]), "free device memory")
            pointer = check(self._cu, self._cu.cuMemAlloc(nbytes), f"allocate {nbytes} bytes")
            held = self._buffers[role] = (pointer, nbytes)
        return held[0]

    def _upload(self, role: str, host: NDArray[Any]) -> Any:
        # from pageable memory the call returns once the driver has staged the bytes, so `host`
        # may be a temporary that goes right after
        device = self._buffer(role, host.nbytes)
        check(self._cu, self._cu.cuMemcpyHtoDAsync(device, host.ctypes.data, host.nbytes,
                                                     self._stream), "copy to the device")
        return device

    def _upload_photo(self, src: NDArray[Any]) -> Any:
        if src is self._photo:
            return self._buffers["src"][0]
        device = self._upload("src", np.ascontiguousarray(src, dtype=np.uint8))
        # a read-only array (an Avatar's photo) cannot change under us: keep it on the device
        self._photo = None if src.flags.writeable else src
        return device

    def _download(self, device: Any, out: NDArray[Any]) -> None:
        """Copy the region back into out (a strided view of the frame, usually) and wait for it."""
        host = out if out.flags.c_contiguous else np.empty_like(out, order="C")
        check(self._cu, self._cu.cuMemcpyDtoHAsync(host.ctypes.data, device, host.nbytes,
                                                     self._stream), "copy from the device")
        check(self._cu, self._cu.cuStreamSynchronize(self._stream), "run the kernel")
        if host is not out:
            out[...] = host

    def _launch(self, function: Any, grid: tuple[int, int], block: tuple[int, int],
                args: list[NDArray[Any]]) -> None:
        # kernelParams: an array of pointers, each to one argument's value (read at launch)
        params = np.array([a.ctypes.data for a in args], dtype=np.uint64)
        check(self._cu, self._cu.cuLaunchKernel(function, grid[0], grid[1], 1, block[0], block[1], 1,
                                                 0, self._stream, params.ctypes.data, 0),
               "launch a kernel")


def device_target(cu: Any, nvrtc: Any, device_index: int) -> str:
    """The NVRTC target ("sm_86", or "compute_XY" for a GPU newer than NVRTC) for a device."""
    device = check(cu, cu.cuDeviceGet(device_index), "open the device")
    return choose_target(capability(cu, device), supported_archs(nvrtc))


def _kernels_for(cu: Any, nvrtc: Any, device_index: int) -> tuple[Any, ...]:
    """warp.cu's kernels loaded on a device (the context must be current)."""
    return load_program(cu, nvrtc, device_index, WARP)


def load_program(cu: Any, nvrtc: Any, device_index: int, program: Program) -> tuple[Any, ...]:
    """A program's kernels (CUfunctions, in `program.kernels` order) loaded on a device, compiled
    once per process (the context must be current)."""
    with _MODULES_LOCK:
        key = (device_index, program.source)
        if key not in _MODULES:
            target = device_target(cu, nvrtc, device_index)
            image = compile_kernels(target, nvrtc, program=program)
            # the module lives as long as the process: hold its context open for it
            open_device(cu, device_index)
            module = check(cu, cu.cuModuleLoadData(image), "load the compiled kernels")
            _MODULES[key] = tuple(
                check(cu, cu.cuModuleGetFunction(module, name.encode()), f"find {name}")
                for name in program.kernels)
        return _MODULES[key]


def _blocks(n: int, per_block: int) -> int:
    return (n + per_block - 1) // per_block


def _ptr(device_pointer: Any) -> NDArray[Any]:
    return np.array([int(device_pointer)], dtype=np.uint64)


def _i32(value: int) -> NDArray[Any]:
    return np.array([value], dtype=np.int32)


def _check_warp_shapes(src: NDArray[Any], coords: NDArray[Any], out: NDArray[Any]) -> None:
    # the kernel trusts these shapes: a mismatch would read or write outside the device buffers
    if src.ndim != 3 or src.shape[2] != 3 or min(src.shape[:2]) < 2 or src.dtype != np.uint8:
        raise ValueError(f"src must be (H, W, 3) uint8 with H, W >= 2, not {src.shape} {src.dtype}")
    if out.dtype != np.uint8 or out.shape[2:] != (3,) or coords.shape != (*out.shape[:2], 2):
        raise ValueError(f"need out (h, w, 3) uint8 and coords (h, w, 2): got {out.shape} {out.dtype}"
                         f" and {coords.shape}")


def _check_composite_shapes(out: NDArray[Any], colour: NDArray[Any], alpha: NDArray[Any]) -> None:
    if out.dtype != np.uint8 or out.shape[2:] != (3,) or colour.shape != out.shape \
            or alpha.shape != out.shape[:2]:
        raise ValueError(f"need out (h, w, 3) uint8, colour (h, w, 3), alpha (h, w): got {out.shape} "
                         f"{out.dtype}, {colour.shape}, {alpha.shape}")
