"""The CUDA kernels' per-pixel math built for the CPU, and a stand-in for cuda-python's driver module
that runs it, for machines without an NVIDIA GPU.

`build_math_library` compiles lipstream/kernels/warp.cuh with the host C or C++ compiler into a
shared library whose two functions take exactly the `__global__` kernels' arguments and loop over
the pixels the GPU threads would each take. `CpuDriver` answers the driver calls `CudaKernels`
makes: device memory is host memory, and cuLaunchKernel decodes the kernelParams pointer array as
the GPU would and calls the library. So `CudaKernels`' own code (buffers, copies, argument packing,
strided regions) runs for real; only the device is replaced.

`build_render_library` builds render.cu itself (the device renderer's kernels) as C++ with
`__global__` emptied and the thread indices as globals: `host_<kernel>(grid, block, args...)`
calls the unchanged kernel once per thread, one at a time (so it cannot show races between
threads). `CpuDriver` runs `DeviceRenderer` on it the same way.
"""

import ctypes
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

KERNELS_DIR = Path(__file__).resolve().parents[1] / "lipstream" / "kernels"

# The same loops as warp.cu's kernels, one call per thread's pixel.
WRAPPER = r"""
#include "warp.cuh"

#ifdef __cplusplus
extern "C" { /* unmangled names, as warp.cu's kernels have */
#endif

void ls_warp_region(const unsigned char *src, int src_h, int src_w, const float *coords,
                    unsigned char *out, int out_h, int out_w)
{
    int x, y;
    for (y = 0; y < out_h; ++y)
        for (x = 0; x < out_w; ++x)
            ls_warp_pixel(src, src_h, src_w, coords, out, out_w, x, y);
}

void ls_composite(unsigned char *out, const float *colour, const float *alpha, int n_pixels)
{
    long i;
    for (i = 0; i < n_pixels; ++i)
        ls_composite_pixel(out, colour, alpha, i);
}

#ifdef __cplusplus
}
#endif
"""

P, I32 = ctypes.c_void_p, ctypes.c_int32
SIGNATURES = {"ls_warp_region": (P, I32, I32, P, P, I32, I32), "ls_composite": (P, P, P, I32)}

# render.cu itself, built as C++ for the CPU: its kernels run unchanged, one call per GPU thread,
# with blockIdx/threadIdx/blockDim as globals that each host_<kernel> loop sets, as the GPU would.
RENDER_HOST = r"""
struct ls_dim3 { int x, y, z; };
static ls_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#include "render.cu"

#define LS_HOST_LAUNCH(name, params, args)                                            \
    extern "C" void host_##name(int gx, int gy, int bx, int by, params)               \
    {                                                                                 \
        blockDim.x = bx; blockDim.y = by; blockDim.z = 1;                             \
        for (blockIdx.y = 0; blockIdx.y < gy; ++blockIdx.y)                           \
            for (blockIdx.x = 0; blockIdx.x < gx; ++blockIdx.x)                       \
                for (threadIdx.y = 0; threadIdx.y < by; ++threadIdx.y)                \
                    for (threadIdx.x = 0; threadIdx.x < bx; ++threadIdx.x) name args; \
    }
#define COMMA ,
LS_HOST_LAUNCH(ls_head_move, const unsigned char *a COMMA int b COMMA ls_affine_d c COMMA unsigned char *d,
               (a, b, c, d))
LS_HOST_LAUNCH(ls_rig_coarse, const float *a COMMA const float *b COMMA int c COMMA int d COMMA
               float e COMMA float *f COMMA int *g, (a, b, c, d, e, f, g))
LS_HOST_LAUNCH(ls_rig_field, const unsigned char *a COMMA int b COMMA const float *c COMMA
               const float *d COMMA const float *e COMMA const float *f COMMA const float *g COMMA
               ls_field_params h COMMA unsigned char *i COMMA float *j COMMA float *k COMMA
               float *l COMMA float *m COMMA int *n, (a, b, c, d, e, f, g, h, i, j, k, l, m, n))
LS_HOST_LAUNCH(ls_mouth_interior, unsigned char *a COMMA int b COMMA const float *c COMMA
               const float *d COMMA const float *e COMMA ls_field_params f COMMA ls_mouth_params g
               COMMA const int *h, (a, b, c, d, e, f, g, h))
LS_HOST_LAUNCH(ls_blink, const unsigned char *a COMMA int b COMMA const float *c COMMA
               ls_blink_params d COMMA unsigned char *e, (a, b, c, d, e))
LS_HOST_LAUNCH(ls_i420, const unsigned char *a COMMA int b COMMA unsigned char *c, (a, b, c))
"""


def render_signatures() -> dict[str, tuple[Any, ...]]:
    """render.cu's kernels' argument types (struct arguments by value, as params.py lays them out)."""
    from lipstream.kernels.params import AffineD, BlinkParams, FieldParams, MouthParams

    F = ctypes.c_float
    return {"ls_head_move": (P, I32, AffineD, P), "ls_rig_coarse": (P, P, I32, I32, F, P, P),
            "ls_rig_field": (P, I32, P, P, P, P, P, FieldParams, P, P, P, P, P, P),
            "ls_mouth_interior": (P, I32, P, P, P, FieldParams, MouthParams, P),
            "ls_blink": (P, I32, P, BlinkParams, P), "ls_i420": (P, I32, P)}


def build_render_library(folder: Path, compiler: str = "c++") -> ctypes.CDLL:
    """render.cu (and the warp kernels' loops, so one library serves CudaKernels too) built for the
    CPU as C++, warnings as errors; plus the render headers alone as C99, to keep them plain C."""
    c_check = folder / "headers.c"
    c_check.write_text('#include "rig.cuh"\n#include "face.cuh"\nint ls_headers_build;\n')
    _compile(["cc", "-x", "c", "-std=c99", "-c", str(c_check), "-o", str(folder / "headers.o")])
    source = folder / "render_host.cpp"
    source.write_text(WRAPPER + RENDER_HOST)
    library = folder / "render_host.so"
    _compile([compiler, "-x", "c++", "-std=c++11", "-O2", "-shared", "-fPIC", str(source), "-o",
              str(library), "-lm"])
    lib = ctypes.CDLL(str(library))
    for name, argtypes in (SIGNATURES | {f"host_{k}": (I32,) * 4 + v
                                         for k, v in render_signatures().items()}).items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


def _compile(command: list[str]) -> None:
    warnings = ["-Wall", "-Wextra", "-pedantic", "-Werror", f"-I{KERNELS_DIR}"]
    subprocess.run(command[:1] + warnings + command[1:], check=True, capture_output=True, text=True)


def build_math_library(folder: Path, compiler: str, language: str) -> ctypes.CDLL:
    """warp.cuh compiled by `compiler` as `language` ("c" or "c++"), warnings as errors."""
    source = folder / "wrapper.c"
    source.write_text(WRAPPER)
    library = folder / f"warp_{language.replace('+', 'p')}.so"
    standard = "-std=c99" if language == "c" else "-std=c++11"
    subprocess.run(
        [compiler, "-x", language, standard, "-O2", "-Wall", "-Wextra", "-pedantic",
         "-Werror", "-shared", "-fPIC", f"-I{KERNELS_DIR}", str(source), "-o", str(library), "-lm"],
        check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(library))
    for name, argtypes in SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib


class CpuDriver:
    """The driver calls CudaKernels makes, answered on the CPU; counts what it was asked to do."""

    CUdevice_attribute = SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR="major",
                                         CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR="minor")

    def __init__(self, lib: ctypes.CDLL, capability: tuple[int, int] = (8, 6)) -> None:
        self.lib = lib
        self.capability = {"major": capability[0], "minor": capability[1]}
        self.memory: dict[int, np.ndarray] = {}  # device pointer -> its host-side bytes
        self.allocations = 0
        self.uploaded: list[int] = []  # bytes of each host -> device copy
        self.images: list[bytes] = []  # modules loaded
        self.downloaded: list[int] = []  # bytes of each device -> host copy
        self.launched: list[str] = []  # kernel names, in launch order
        self.events: list[float] = []  # each event's recorded time, s

    def cuInit(self, flags: int) -> tuple[int]:
        return (0,)

    def cuDeviceGetCount(self) -> tuple[int, int]:
        return 0, 1

    def cuDeviceGet(self, index: int) -> tuple[int, int]:
        return 0, index

    def cuDeviceGetAttribute(self, attribute: str, device: int) -> tuple[int, int]:
        return 0, self.capability[attribute]

    def cuDevicePrimaryCtxRetain(self, device: int) -> tuple[int, str]:
        return 0, "context"

    def cuDevicePrimaryCtxRelease(self, device: int) -> tuple[int]:
        return (0,)

    def cuCtxPushCurrent(self, context: str) -> tuple[int]:
        return (0,)

    def cuCtxPopCurrent(self) -> tuple[int, str]:
        return 0, "context"

    def cuStreamCreate(self, flags: int) -> tuple[int, str]:
        return 0, "stream"

    def cuStreamSynchronize(self, stream: str) -> tuple[int]:
        return (0,)

    def cuStreamDestroy(self, stream: str) -> tuple[int]:
        return (0,)

    def cuEventCreate(self, flags: int) -> tuple[int, int]:
        self.events.append(0.0)
        return 0, len(self.events) - 1

    def cuEventRecord(self, event: int, stream: str) -> tuple[int]:
        self.events[event] = time.perf_counter()  # work on this stream is done when it is queued
        return (0,)

    def cuEventSynchronize(self, event: int) -> tuple[int]:
        return (0,)

    def cuEventElapsedTime(self, start: int, end: int) -> tuple[int, float]:
        return 0, (self.events[end] - self.events[start]) * 1e3

    def cuEventDestroy(self, event: int) -> tuple[int]:
        return (0,)

    def cuModuleLoadData(self, image: bytes) -> tuple[int, bytes]:
        self.images.append(image)
        return 0, image

    def cuModuleGetFunction(self, module: bytes, name: bytes) -> tuple[int, str | None]:
        if name not in module:  # CUDA_ERROR_NOT_FOUND: the compiled module lacks that kernel
            return 500, None
        return 0, name.decode()

    def cuMemAlloc(self, nbytes: int) -> tuple[int, int]:
        block = np.zeros(nbytes, np.uint8)
        self.memory[block.ctypes.data] = block
        self.allocations += 1
        return 0, block.ctypes.data

    def cuMemFree(self, pointer: int) -> tuple[int]:
        del self.memory[int(pointer)]
        return (0,)

    def cuMemcpyHtoDAsync(self, device: int, host: int, nbytes: int, stream: str) -> tuple[int]:
        self._check_inside(int(device), nbytes)
        ctypes.memmove(int(device), host, nbytes)
        self.uploaded.append(nbytes)
        return (0,)

    def cuMemcpyDtoHAsync(self, host: int, device: int, nbytes: int, stream: str) -> tuple[int]:
        self._check_inside(int(device), nbytes)
        ctypes.memmove(host, int(device), nbytes)
        self.downloaded.append(nbytes)
        return (0,)

    def cuMemcpyDtoDAsync(self, target: int, source: int, nbytes: int, stream: str) -> tuple[int]:
        self._check_inside(int(target), nbytes)
        self._check_inside(int(source), nbytes)
        ctypes.memmove(int(target), int(source), nbytes)
        return (0,)

    def cuLaunchKernel(self, function: str, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                       shared: int, stream: str, params: int, extra: Any) -> tuple[int]:
        self.launched.append(function)
        if function not in SIGNATURES:  # render.cu: its own kernel code runs, thread by thread
            argtypes = render_signatures()[function]
            pointers = (ctypes.c_uint64 * len(argtypes)).from_address(params)
            args = [_argument(t, p) for t, p in zip(argtypes, pointers, strict=True)]
            getattr(self.lib, f"host_{function}")(gx, gy, bx, by, *args)
            return (0,)
        argtypes = SIGNATURES[function]
        pointers = (ctypes.c_uint64 * len(argtypes)).from_address(params)
        args = [t.from_address(p).value for t, p in zip(argtypes, pointers, strict=True)]
        self._check_launch(function, args, (gx * bx, gy * by))
        getattr(self.lib, function)(*args)
        return (0,)

    def _check_inside(self, pointer: int, nbytes: int) -> None:
        assert self.memory[pointer].nbytes >= nbytes, "copy past the end of a device buffer"

    def _check_launch(self, function: str, args: list[Any], threads: tuple[int, int]) -> None:
        """Every pixel has a thread, and each pointer is a device buffer big enough for its array."""
        if function == "ls_warp_region":
            src, src_h, src_w, coords, out, out_h, out_w = args
            assert threads[0] >= out_w and threads[1] >= out_h
            needed = {src: src_h * src_w * 3, coords: out_h * out_w * 8, out: out_h * out_w * 3}
        else:
            out, colour, alpha, n_pixels = args
            assert threads[0] >= n_pixels
            needed = {out: n_pixels * 3, colour: n_pixels * 12, alpha: n_pixels * 4}
        for pointer, nbytes in needed.items():
            self._check_inside(pointer, nbytes)


def _argument(kind: Any, address: int) -> Any:
    """One kernel argument read from where kernelParams points: a struct copied, a scalar's value."""
    if issubclass(kind, ctypes.Structure):
        return kind.from_buffer_copy((ctypes.c_char * ctypes.sizeof(kind)).from_address(address))
    return kind.from_address(address).value
