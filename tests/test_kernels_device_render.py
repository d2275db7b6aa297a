"""`DeviceRenderer`: its host code (buffers allocated once, the photo uploaded once, the stages
launched in order, one I420 copy down per frame) on the stand-in driver that runs render.cu on the
CPU (tests/cuda_on_cpu.py), whole frames against `Renderer`; on a real GPU (marker `gpu`) the same.
"""

import ctypes
import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.device import CPU_CHOICE, ONNX_CPU, DeviceChoice, device_renderer
from lipstream.engine.render import RenderConfig, Renderer
from lipstream.errors import GpuError
from lipstream.kernels import cuda as cuda_kernels
from lipstream.kernels import device_render
from lipstream.kernels.build import RENDER
from lipstream.kernels.device_render import DeviceRenderer
from tests.conftest import REPO
from tests.cuda_on_cpu import CpuDriver, build_render_library
from tests.test_kernels_cuda import _require_nvrtc

OPEN = np.array([0.8, 0.3, 0.2, 0.0, 0.0], np.float32)
FRAMES = (14, 40, 41, 77)  # 14: eyes shut; 40, 77: new head poses; 41: the same pose as 40


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return build_render_library(tmp_path_factory.mktemp("render"))


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default()


@pytest.fixture()
def driver(monkeypatch: pytest.MonkeyPatch, lib: ctypes.CDLL) -> CpuDriver:
    """DeviceRenderer's driver calls answered on the CPU; render.cu compiled by the real NVRTC."""
    _require_nvrtc()
    cpu_driver = CpuDriver(lib)
    nvrtc = cuda_kernels.bindings()[1]
    monkeypatch.setattr(device_render, "bindings", lambda: (cpu_driver, nvrtc))
    monkeypatch.setattr(cuda_kernels, "_MODULES", {})
    return cpu_driver


def cpu_i420(renderer: Renderer, controls: np.ndarray, index: int) -> np.ndarray:
    return cv2.cvtColor(renderer.render(controls, index), cv2.COLOR_RGB2YUV_I420)


def assert_within_one_level(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{(diff > 1).sum()} values more than one grey level off"


def test_device_frames_match_the_cpu_renderer(driver: CpuDriver, avatar: Avatar) -> None:
    cpu, device = Renderer(avatar, seed=3), DeviceRenderer(avatar, seed=3)
    assert driver.images and driver.images[0][:4] == b"\x7fELF"  # render.cu, a cubin for sm_86
    assert cpu.blink_amount(14) == 1.0
    for index in FRAMES:
        assert_within_one_level(device.render_i420(OPEN, index), cpu_i420(cpu, OPEN, index))


def test_device_frames_of_a_photographed_face_match(driver: CpuDriver, shared_faces: Path) -> None:
    avatar = Avatar.from_image(shared_faces / "portrait-obama.jpg")
    cpu, device = Renderer(avatar, seed=8), DeviceRenderer(avatar, seed=8)
    blinking = next(i for i in range(200) if cpu.blink_amount(i) > 0.5)
    for index, controls in ((blinking, [0.6, 0.5, 0.3, 0.1, 0.0]), (90, [0.2, 0.8, 0.0, 0.3, 0.9])):
        c = np.array(controls, np.float32)
        assert_within_one_level(device.render_i420(c, index), cpu_i420(cpu, c, index))


def test_device_frames_match_with_the_head_still_and_other_poses(driver: CpuDriver,
                                                                 avatar: Avatar) -> None:
    still = RenderConfig(head_rotation_deg=0.0, head_shift_px=0.0)
    cpu, device = Renderer(avatar, still, seed=5), DeviceRenderer(avatar, still, seed=5)
    for index, controls in enumerate(([0, 0, 0, 0, 0], [0.3, 0.9, 0.1, 0.5, 0.2], [1, 1, 1, 1, 1])):
        c = np.array(controls, np.float32)
        assert_within_one_level(device.render_i420(c, index), cpu_i420(cpu, c, index))
    assert "ls_head_move" not in driver.launched  # a still head is never re-sampled


def test_one_copy_down_per_frame_and_nothing_allocated_after_start(driver: CpuDriver,
                                                                   avatar: Avatar) -> None:
    device = DeviceRenderer(avatar, seed=3)
    allocated, uploaded = driver.allocations, len(driver.uploaded)
    assert driver.uploaded.count(avatar.image.nbytes) == 1  # the photo went up once
    out = np.empty((avatar.size * 3 // 2, avatar.size), np.uint8)
    for index in FRAMES:
        assert device.render_i420(OPEN, index, out=out) is out  # straight into the caller's buffer
    assert driver.allocations == allocated
    assert driver.downloaded == [out.nbytes] * len(FRAMES)
    assert driver.uploaded[uploaded:] == [4 * (len(OPEN) + 1)] * len(FRAMES)  # the controls only
    assert driver.launched.count("ls_head_move") == 3  # 14, 40, 77: frame 41 keeps 40's pose
    assert driver.launched[-5:] == ["ls_head_move", "ls_rig_coarse", "ls_rig_field",
                                    "ls_mouth_interior", "ls_i420"]
    device.close()
    assert driver.memory == {}


def test_a_wrong_output_buffer_is_a_clear_error(driver: CpuDriver, avatar: Avatar) -> None:
    device = DeviceRenderer(avatar, seed=3)
    with pytest.raises(ValueError, match=r"out must be a contiguous \(768, 512\) uint8 array"):
        device.render_i420(OPEN, 0, out=np.empty((512, 512, 3), np.uint8))


def test_every_render_kernel_is_in_the_module(driver: CpuDriver, avatar: Avatar) -> None:
    DeviceRenderer(avatar)
    for name in RENDER.kernels:
        assert name.encode() in driver.images[0]


def test_stage_times_cover_every_stage_of_a_frame(driver: CpuDriver, avatar: Avatar) -> None:
    """What benchmarks/gpu.py prints per stage: one entry each, timed by events on the stream."""
    device = DeviceRenderer(avatar, seed=3)
    times = device.stage_times_ms(OPEN, 14)
    assert list(times) == ["head", "rig", "field + warp", "interior", "blink", "i420", "copy down"]
    assert all(ms >= 0.0 for ms in times.values())
    assert driver.downloaded == [avatar.size * avatar.size * 3 // 2]


def test_the_gpu_benchmark_measures_the_device_render(driver: CpuDriver,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/gpu.py's device-render rows, its code run on the stand-in driver."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    rows = benchmark.measure_device_render(frames=3)
    assert list(rows) == ["head", "rig", "field + warp", "interior", "blink", "i420", "copy down", "total"]
    assert rows["total"]["p50_ms"] > 0.0


def test_the_device_choice_selects_the_renderer(driver: CpuDriver, avatar: Avatar) -> None:
    gpu = DeviceChoice("cuda", ONNX_CPU, "cuda", "a test")
    assert isinstance(device_renderer(gpu, avatar, RenderConfig(), 3), DeviceRenderer)
    assert device_renderer(CPU_CHOICE, avatar, RenderConfig(), 3) is None


def test_the_cpu_choice_imports_no_gpu_module(avatar: Avatar) -> None:
    code = ("import sys; from lipstream.engine.device import CPU_CHOICE, device_renderer; "
            "from lipstream.engine.avatar import Avatar; from lipstream.engine.render import RenderConfig; "
            "assert device_renderer(CPU_CHOICE, Avatar.default(), RenderConfig(), 0) is None; "
            "print(sorted(m for m in sys.modules if m.startswith(('cuda', 'lipstream.kernels.'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"  # no cuda-python, no device_render, cuda or build


def test_device_renderer_without_a_gpu_is_a_clear_error(avatar: Avatar) -> None:
    try:
        DeviceRenderer(avatar)
    except GpuError as err:
        assert "pip install lipstream[gpu]" in str(err)
    else:
        pytest.skip("this machine has an NVIDIA GPU")


@pytest.mark.gpu
def test_device_renderer_on_a_gpu_matches_the_cpu(avatar: Avatar, tmp_path: Path) -> None:
    try:
        device = DeviceRenderer(avatar, seed=3)
    except GpuError as err:
        pytest.skip(f"needs an NVIDIA GPU with CUDA ({err})")
    cpu = Renderer(avatar, seed=3)
    for index in FRAMES:
        assert_within_one_level(device.render_i420(OPEN, index), cpu_i420(cpu, OPEN, index))
