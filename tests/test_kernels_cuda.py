"""The CUDA kernels, checked as far as a machine without an NVIDIA GPU allows.

- warp.cuh's per-pixel math, built for the CPU with the host C and C++ compilers, agrees with the
  numpy reference (reference.py);
- warp.cu compiles with nvcc, and with NVRTC through the same code path `CudaKernels` uses;
- `CudaKernels`' host code (buffers, copies, argument packing, strided regions, the renderer on
  device "cuda") runs against a stand-in driver that executes that CPU build (tests/cuda_on_cpu.py);
- on a real GPU (marker `gpu`), `CudaKernels` agrees with the reference;
- without one, device "cuda" is a clear error.
"""

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from lipstream.errors import GpuError
from lipstream.kernels import cuda as cuda_kernels
from lipstream.kernels import get_kernels
from lipstream.kernels.build import (
    NO_BINDINGS,
    PROGRAMS,
    RENDER,
    Program,
    choose_target,
    compile_kernels,
    kernel_source,
    load_nvrtc,
    program_source,
)
from lipstream.kernels.driver import NO_DEVICE
from lipstream.kernels.reference import ReferenceKernels
from tests.cuda_on_cpu import KERNELS_DIR, CpuDriver, build_math_library
from tests.test_kernels import warp_coords

REFERENCE = ReferenceKernels()
COMPILERS = [("cc", "c"), ("c++", "c++")]
RELEASE_ARCHS = (80, 86, 89, 90)  # A100, A10/A40/RTX 30, L4/L40/RTX 40, H100/H200: each must build


def _cuda_python() -> bool:
    try:
        cuda_kernels.bindings()
    except GpuError:
        return False
    return True


def _nvrtc_works() -> bool:
    try:
        load_nvrtc()
    except GpuError:
        return False
    return True


def _nvcc() -> str | None:
    return shutil.which("nvcc") or shutil.which("/usr/local/cuda/bin/nvcc")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def _build(folder: Path, compiler: str, language: str) -> ctypes.CDLL:
    if shutil.which(compiler) is None:
        pytest.skip(f"no {language} compiler ({compiler}) to build warp.cuh for the CPU")
    return build_math_library(folder, compiler, language)


@pytest.fixture(scope="module", params=COMPILERS, ids=[c[1] for c in COMPILERS])
def math_lib(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """warp.cuh built as C, then as C++."""
    compiler, language = request.param
    return _build(tmp_path_factory.mktemp("warp"), compiler, language)


@pytest.fixture(scope="module")
def c_math_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return _build(tmp_path_factory.mktemp("warp"), "cc", "c")


def _cpu_warp(lib: ctypes.CDLL, src: np.ndarray, coords: np.ndarray) -> np.ndarray:
    out = np.zeros((*coords.shape[:2], 3), np.uint8)
    lib.ls_warp_region(src.ctypes.data, src.shape[0], src.shape[1], coords.ctypes.data,
                       out.ctypes.data, out.shape[0], out.shape[1])
    return out


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """float32 arithmetic against float64: at most one level apart, and almost always equal."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.99


@pytest.mark.parametrize("source", ["photo", "noise"])
def test_cpu_build_warp_matches_reference(math_lib: ctypes.CDLL, photo: np.ndarray, source: str) -> None:
    rng = np.random.default_rng(0)
    src = photo if source == "photo" else rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    coords = warp_coords((120, 140), rng)
    want = np.zeros((120, 140, 3), np.uint8)
    REFERENCE.warp_region(src, coords, want)
    _assert_close(_cpu_warp(math_lib, src, coords), want)


def test_cpu_build_identity_warp_is_exact(math_lib: ctypes.CDLL, photo: np.ndarray) -> None:
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float32)
    np.testing.assert_array_equal(_cpu_warp(math_lib, photo, np.stack([xs, ys], -1)), photo)


def test_cpu_build_bad_coordinates_stay_inside_the_photo(math_lib: ctypes.CDLL, photo: np.ndarray) -> None:
    """NaN or infinite coordinates (a broken field) read an edge pixel, never GPU memory past it."""
    coords = np.array([[[np.nan, np.nan], [np.inf, -np.inf], [-np.inf, 1e30]]], np.float32)
    out = _cpu_warp(math_lib, photo, coords)
    np.testing.assert_array_equal(out[0], [photo[0, 0], photo[0, -1], photo[-1, 0]])


def test_cpu_build_composite_matches_reference(math_lib: ctypes.CDLL, photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    colour = rng.uniform(0, 255, size=(64, 80, 3)).astype(np.float32)
    alpha = rng.uniform(-0.2, 1.2, size=(64, 80)).clip(0, 1).astype(np.float32)
    got, want = photo[:64, :80].copy(), photo[:64, :80].copy()
    math_lib.ls_composite(got.ctypes.data, colour.ctypes.data, alpha.ctypes.data, 64 * 80)
    REFERENCE.composite(want, colour, alpha)
    _assert_close(got, want)
    np.testing.assert_array_equal(got[alpha == 0], photo[:64, :80][alpha == 0])
    np.testing.assert_array_equal(got[alpha == 1], np.floor(colour[alpha == 1] + 0.5))


def test_nvcc_compiles_the_kernels(tmp_path: Path) -> None:
    image = _nvcc_cubin(tmp_path, "sm_80")
    assert image[:4] == b"\x7fELF" and b"ls_warp_region" in image and b"ls_composite" in image


def _nvcc_cubin(folder: Path, arch: str, source: str = "warp.cu") -> bytes:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed; the NVRTC test covers compilation")
    cubin = folder / "warp.cubin"
    result = subprocess.run([nvcc, "-cubin", f"-arch={arch}", "--Werror", "all-warnings",
                             str(KERNELS_DIR / source), "-o", str(cubin)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return cubin.read_bytes()


def _require_nvrtc() -> None:
    """CI must compile: a skip there would hide a broken kernel. `lipstream[dev]` installs
    cuda-python with NVRTC, so only an install without cuda-python at all (outside CI) skips."""
    if _nvrtc_works():
        return
    missing = "NVRTC is not installed (pip install 'cuda-python[all]', part of lipstream[dev])"
    if _cuda_python() or os.environ.get("CI"):
        pytest.fail(f"{missing}: the CUDA kernels must compile in every test run")
    pytest.skip(f"{missing}: it compiles without a GPU")


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.source for p in PROGRAMS])
@pytest.mark.parametrize("arch", RELEASE_ARCHS)
def test_nvrtc_compiles_the_kernels_for_each_datacentre_gpu(arch: int, program: Program) -> None:
    _require_nvrtc()
    image = compile_kernels(f"sm_{arch}", program=program)
    assert image[:4] == b"\x7fELF"
    for name in program.kernels:
        assert name.encode() in image


def test_a_render_kernel_compile_error_is_reported_with_the_compiler_log() -> None:
    _require_nvrtc()
    source, *headers = program_source(RENDER)
    broken = [headers[i] if name != "face.cuh" else headers[i].replace(b"fmaxf(coverage", b"fmaxf(oops", 1)
              for i, name in enumerate(RENDER.headers)]
    with pytest.raises(GpuError, match=r"NVRTC could not compile render.cu for sm_90: .*error"):
        compile_kernels("sm_90", sources=(source, *broken), program=RENDER)


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.source for p in PROGRAMS])
@pytest.mark.parametrize("arch", RELEASE_ARCHS)
def test_nvcc_compiles_the_kernels_for_each_datacentre_gpu(arch: int, tmp_path: Path,
                                                           program: Program) -> None:
    image = _nvcc_cubin(tmp_path, f"sm_{arch}", program.source)
    assert image[:4] == b"\x7fELF" and program.kernels[0].encode() in image


def test_a_kernel_compile_error_is_reported_with_the_compiler_log() -> None:
    _require_nvrtc()
    source, header = kernel_source()
    broken = source.replace(b"ls_warp_region", b"ls_warp_region(int oops) undeclared_name;", 1)
    with pytest.raises(GpuError, match=r"NVRTC could not compile warp.cu for sm_80: .*error"):
        compile_kernels("sm_80", sources=(broken, header))


@pytest.mark.parametrize("target", ["sm_75", "compute_80"])
def test_nvrtc_compiles_the_kernels(target: str) -> None:
    _require_nvrtc()
    image = compile_kernels(target)
    for name in (b"ls_warp_region", b"ls_composite"):
        assert name in image
    if target.startswith("sm_"):
        assert image[:4] == b"\x7fELF"
    else:
        assert f".target {target.replace('compute', 'sm')}".encode() in image


def test_target_is_a_cubin_for_known_gpus_and_ptx_for_newer_ones() -> None:
    supported = [75, 80, 86, 87, 90, 100, 120]
    assert choose_target((8, 6), supported) == "sm_86"
    assert choose_target((8, 9), supported) == "sm_87"  # a cubin runs on later minors of its major
    assert choose_target((13, 0), supported) == "compute_120"  # the driver JITs PTX forward
    with pytest.raises(GpuError, match="older than NVRTC supports"):
        choose_target((6, 1), supported)


@pytest.fixture()
def cpu_driver(monkeypatch: pytest.MonkeyPatch, c_math_lib: ctypes.CDLL,
               tmp_path: Path) -> CpuDriver:
    """CudaKernels with its driver calls answered on the CPU. The module it loads is compiled by
    the real NVRTC, or by nvcc where cuda-python is not installed (the CI's dev environment)."""
    driver = CpuDriver(c_math_lib)
    nvrtc = cuda_kernels.bindings()[1] if _nvrtc_works() else None
    if nvrtc is None:
        cubin = _nvcc_cubin(tmp_path, "sm_86")
        monkeypatch.setattr(cuda_kernels, "supported_archs", lambda nvrtc: [86])
        monkeypatch.setattr(cuda_kernels, "compile_kernels", lambda target, nvrtc, program: cubin)
    monkeypatch.setattr(cuda_kernels, "bindings", lambda: (driver, nvrtc))
    monkeypatch.setattr(cuda_kernels, "_MODULES", {})
    return driver


def test_cuda_kernels_write_frame_regions_like_the_reference(cpu_driver: CpuDriver,
                                                             photo: np.ndarray) -> None:
    kernels = cuda_kernels.CudaKernels()
    assert cpu_driver.images and cpu_driver.images[0][:4] == b"\x7fELF"  # a cubin for sm_86
    rng = np.random.default_rng(2)
    coords = warp_coords((120, 140), rng)
    got, want = photo.copy(), photo.copy()
    kernels.warp_region(photo, coords, got[200:320, 100:240])  # strided views, as the renderer does
    REFERENCE.warp_region(photo, coords, want[200:320, 100:240])
    colour = rng.uniform(0, 255, size=(30, 50, 3)).astype(np.float32)
    alpha = rng.uniform(0, 1, size=(30, 50)).astype(np.float32)
    kernels.composite(got[250:280, 150:200], colour, alpha)
    REFERENCE.composite(want[250:280, 150:200], colour, alpha)
    _assert_close(got, want)
    np.testing.assert_array_equal(got[:200], photo[:200])  # nothing outside the regions changes


def test_cuda_kernels_reuse_device_memory_and_the_photo(cpu_driver: CpuDriver, photo: np.ndarray) -> None:
    kernels = cuda_kernels.CudaKernels()
    still = photo.copy()
    still.flags.writeable = False  # as an Avatar's image is
    frame = photo.copy()
    for size in (100, 80, 100, 60):  # regions of changing size, none larger than the first
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        kernels.warp_region(still, np.stack([xs, ys], -1), frame[:size, :size])
        kernels.composite(frame[:size, :size], np.zeros((size, size, 3), np.float32),
                          np.zeros((size, size), np.float32))
    assert cpu_driver.allocations == 5  # photo, coords, pixels, colour, alpha: once each
    assert cpu_driver.uploaded.count(still.nbytes) == 1  # the photo went up once
    np.testing.assert_array_equal(frame, photo)
    kernels.close()
    assert cpu_driver.memory == {}


def test_renderer_on_device_cuda_matches_the_cpu(cpu_driver: CpuDriver) -> None:
    from lipstream.engine.avatar import Avatar
    from lipstream.engine.render import RenderConfig, Renderer

    avatar = Avatar.default()
    controls = np.array([0.8, 0.3, 0.2, 0.0, 0.0], np.float32)  # mouth open: warp and composite
    cpu_renderer = Renderer(avatar, RenderConfig(device="cpu"), seed=3)
    gpu_renderer = Renderer(avatar, RenderConfig(device="cuda"), seed=3)
    assert cpu_renderer.blink_amount(14) == 1.0  # frame 14 also warps the closed eyes
    for index in (14, 40):
        cpu, gpu = cpu_renderer.render(controls, index), gpu_renderer.render(controls, index)
        diff = np.abs(cpu.astype(int) - gpu.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.05  # OpenCV's 5-bit weights vs exact bilinear


@pytest.mark.gpu
def test_cuda_kernels_on_a_gpu_match_the_reference(photo: np.ndarray) -> None:
    try:
        kernels = get_kernels("cuda")
    except GpuError as err:
        pytest.skip(f"needs an NVIDIA GPU with CUDA ({err})")
    coords = warp_coords((120, 140), np.random.default_rng(3))
    got, want = photo.copy(), photo.copy()
    kernels.warp_region(photo, coords, got[200:320, 100:240])
    REFERENCE.warp_region(photo, coords, want[200:320, 100:240])
    colour = np.full((30, 50, 3), 40.0, np.float32)
    alpha = np.linspace(0, 1, 30 * 50, dtype=np.float32).reshape(30, 50)
    kernels.composite(got[250:280, 150:200], colour, alpha)
    REFERENCE.composite(want[250:280, 150:200], colour, alpha)
    _assert_close(got, want)


def test_device_cuda_without_a_gpu_is_a_clear_error() -> None:
    expected = NO_DEVICE if _cuda_python() else NO_BINDINGS
    try:
        get_kernels("cuda")
    except GpuError as err:
        assert str(err) == expected
    else:
        pytest.skip("this machine has an NVIDIA GPU")


def test_device_cuda_without_cuda_python_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings"):
        monkeypatch.setitem(sys.modules, name, None)  # as if cuda-python were not installed
    with pytest.raises(GpuError) as raised:
        get_kernels("cuda")
    assert str(raised.value) == NO_BINDINGS
    assert "pip install lipstream[gpu]" in str(raised.value)
