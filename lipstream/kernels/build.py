"""warp.cu -> a GPU binary, compiled at run time by NVRTC (cuda-python); no device needed.

NVRTC ships in a pip wheel (`pip install lipstream[gpu]`), so a user needs no CUDA toolkit, and the
binary is built for the exact GPU it runs on. Compiling needs no GPU and no driver, which is what
lets the tests check this path on machines without one.
"""

from dataclasses import dataclass
from importlib import resources
from typing import Any

from lipstream.errors import GpuError


@dataclass(frozen=True)
class Program:
    """One NVRTC program: a .cu file, the headers it includes (handed to NVRTC by name, so no
    include path is needed) and the kernels it defines."""

    source: str
    headers: tuple[str, ...]
    kernels: tuple[str, ...]
    options: tuple[str, ...] = ()  # NVRTC options beyond the target


WARP = Program("warp.cu", ("warp.cuh",), ("ls_warp_region", "ls_composite"))
# No fused multiply-add: the renderer must round as the CPU path does (a lip-edge bin or a 1/32 px
# sample position decided by the last bit of a product would otherwise differ now and then).
RENDER = Program("render.cu", ("warp.cuh", "sample.cuh", "rig.cuh", "face.cuh"),
                 ("ls_head_move", "ls_rig_coarse", "ls_rig_field", "ls_mouth_interior", "ls_blink",
                  "ls_i420"), ("--fmad=false",))
PROGRAMS = (WARP, RENDER)
SOURCE, (HEADER,), KERNEL_NAMES = WARP.source, WARP.headers, WARP.kernels
NO_BINDINGS = "cuda-python is not installed: run 'pip install lipstream[gpu]' to use device 'cuda'"
NO_NVRTC = "the NVRTC library is not installed: run 'pip install lipstream[gpu]' (cuda-python[all])"


def bindings() -> tuple[Any, Any]:
    """cuda-python's (driver, nvrtc) modules, imported on first use so lipstream runs without them."""
    try:
        from cuda.bindings import driver, nvrtc  # cuda-python >= 12.8 (and 13)
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python 11.x - 12.7
            from cuda import nvrtc
        except ImportError as err:
            raise GpuError(NO_BINDINGS) from err
    return driver, nvrtc


def kernel_source() -> tuple[bytes, bytes]:
    """(warp.cu, warp.cuh) as shipped inside the package."""
    source, header = program_source(WARP)
    return source, header


def program_source(program: Program) -> tuple[bytes, ...]:
    """A program's source, then its headers in `program.headers` order, as shipped."""
    folder = resources.files("lipstream.kernels")
    return tuple(folder.joinpath(name).read_bytes() for name in (program.source, *program.headers))


def load_nvrtc(nvrtc: Any | None = None) -> Any:
    """cuda-python's nvrtc module with its shared library loaded; GpuError when either is missing."""
    nvrtc = nvrtc or bindings()[1]
    try:
        nvrtc.nvrtcVersion()
    except Exception as err:  # a missing libnvrtc is a loader error from the bindings, not a status
        raise GpuError(NO_NVRTC) from err
    return nvrtc


def supported_archs(nvrtc: Any | None = None) -> list[int]:
    """The compute capabilities this NVRTC can build for, as 10 * major + minor (75, 80, ...)."""
    nvrtc = load_nvrtc(nvrtc)
    return [int(a) for a in _nvrtc_check(nvrtc, nvrtc.nvrtcGetSupportedArchs(), "list its targets")]


def choose_target(capability: tuple[int, int], supported: list[int]) -> str:
    """The NVRTC target for a GPU of compute capability (major, minor).

    A cubin runs on its own major version at the same or a higher minor, and needs no JIT in the
    driver; a GPU newer than NVRTC knows gets PTX, which the driver compiles forward.
    """
    major, minor = capability
    cc = 10 * major + minor
    same_major = [a for a in supported if a // 10 == major and a <= cc]
    if same_major:
        return f"sm_{max(same_major)}"
    older = [a for a in supported if a <= cc]
    if older:
        return f"compute_{max(older)}"
    raise GpuError(f"this GPU (compute capability {major}.{minor}) is older than NVRTC supports "
                   f"(sm_{min(supported)} and newer): install an older cuda-python, e.g. 'cuda-python<13'")


def compile_kernels(target: str, nvrtc: Any | None = None, sources: tuple[bytes, ...] | None = None,
                    program: Program = WARP) -> bytes:
    """A program (warp.cu unless told) compiled for `target`: a cubin (ELF) for "sm_XY", PTX text
    for "compute_XY".

    `sources` replaces the program's (source, *headers) (a test hands in a broken one to see the error).
    """
    nvrtc = load_nvrtc(nvrtc)
    source, *headers = sources or program_source(program)
    names = [name.encode() for name in program.headers]
    handle = _nvrtc_check(nvrtc, nvrtc.nvrtcCreateProgram(source, program.source.encode(), len(headers),
                                                          headers, names), "create a program")
    try:
        options = [f"--gpu-architecture={target}".encode(), *(o.encode() for o in program.options)]
        (status,) = nvrtc.nvrtcCompileProgram(handle, len(options), options)
        if status != 0:
            raise GpuError(f"NVRTC could not compile {program.source} for {target}: {_log(nvrtc, handle)}")
        if target.startswith("sm_"):
            return _read(nvrtc, handle, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
        return _read(nvrtc, handle, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
    finally:
        nvrtc.nvrtcDestroyProgram(handle)


def _read(nvrtc: Any, program: Any, get_size: Any, get: Any) -> bytes:
    size: int = _nvrtc_check(nvrtc, get_size(program), "size its output")
    buffer = b" " * size  # NVRTC writes into the bytes object it is handed
    _nvrtc_check(nvrtc, get(program, buffer), "copy its output")
    return buffer


def _log(nvrtc: Any, program: Any) -> str:
    size: int = _nvrtc_check(nvrtc, nvrtc.nvrtcGetProgramLogSize(program), "size its log")
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(program, log)
    lines = [line for line in log.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[:3]) or "no log"  # one line for the user; the first errors say most


def _nvrtc_check(nvrtc: Any, result: tuple[Any, ...], what: str) -> Any:
    """The value of an NVRTC call that returns (status, value) or (status,)."""
    status = result[0]
    if status != 0:
        raise GpuError(f"NVRTC failed to {what}: {getattr(status, 'name', status)}")
    return result[1] if len(result) > 1 else None
