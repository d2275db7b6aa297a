"""The CUDA kernels' per-pixel math built for the CPU, and a stand-in for cuda-python's driver module
that runs it, for machines without an NVIDIA GPU.

`build_math_library` compiles lipstream/kernels/warp.cuh with the host C or C++ compiler into a
shared library whose two functions take exactly the `__global__` kernels' arguments and loop over
the pixels the GPU threads would each take. `CpuDriver` answers the driver calls `CudaKernels`
makes: device memory is host memory, and cuLaunchKernel decodes the kernelParams pointer array as
the GPU would and calls the library. So `CudaKernels`' own code (buffers, copies, argument packing,
strided regions) runs for real; only the device is replaced.
"""

import ctypes
import subprocess
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
        return (0,)

    def cuLaunchKernel(self, function: str, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                       shared: int, stream: str, params: int, extra: Any) -> tuple[int]:
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
