"""`--device auto|cpu|cuda`: where an engine runs, chosen once, said in one line, and reaching every
engine the server builds. On a machine without an NVIDIA GPU (CI) "auto" falls back to the CPU and
"cuda" is one clear error with exit status 2; the CPU path never imports GPU modules.
"""

import logging
import subprocess
import sys
import types
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.device import (
    CPU_CHOICE,
    ONNX_CPU,
    TENSORRT,
    choose_device,
    find_gpu,
    gpu_runner,
    resolve_device,
)
from lipstream.engine.engine import Engine, EngineConfig
from lipstream.errors import GpuError
from lipstream.streaming import api
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.server import create_app

GPU_MODULES = ("cuda", "tensorrt")


def _has_gpu() -> bool:
    try:
        find_gpu()
    except GpuError:
        return False
    return True


no_gpu = pytest.mark.skipif(_has_gpu(), reason="this machine has an NVIDIA GPU")


@pytest.fixture(autouse=True)
def fresh_resolution() -> Iterator[None]:
    for cached in (resolve_device, choose_device):
        cached.cache_clear()  # each test sees the choice (and its log line) made anew
    yield
    for cached in (resolve_device, choose_device):
        cached.cache_clear()


CPU_ENGINE = """
import sys
import wave
import numpy as np
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.engine import Engine, EngineConfig
engine = Engine(Avatar.default(AvatarConfig(size=128)), EngineConfig(device="cpu"))
engine.push_audio(np.zeros(16000, np.float32), 16000)
assert len(engine.frames()) > 10
print(sorted(m for m in sys.modules if m.split(".")[0] in {gpu!r}))
"""


def test_a_cpu_engine_imports_nothing_gpu_related() -> None:
    result = subprocess.run([sys.executable, "-c", CPU_ENGINE.format(gpu=set(GPU_MODULES))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@no_gpu
def test_auto_without_a_gpu_falls_back_to_the_cpu_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lipstream.engine.device"):
        choice = resolve_device("auto")
        resolve_device("auto")  # asked again by the next engine: decided once, said once
    assert (choice.device, choice.runner, choice.kernels) == ("cpu", ONNX_CPU, "cpu")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "device cpu" in lines[0] and "no usable NVIDIA GPU" in lines[0]


@no_gpu
def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(GpuError, match=r"^--device cuda: .*; or run with --device cpu$"):
        resolve_device("cuda")


def test_cpu_is_chosen_without_probing() -> None:
    assert resolve_device("cpu") == CPU_CHOICE


def test_checking_the_device_early_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A command checks --device first; a later error must stay the only line it prints."""
    with caplog.at_level(logging.INFO, logger="lipstream.engine.device"):
        choice = choose_device("auto")
    assert not caplog.records
    with caplog.at_level(logging.INFO, logger="lipstream.engine.device"):
        assert resolve_device("auto") == choice
    assert len(caplog.records) == 1


@no_gpu
def test_a_gpu_gets_tensorrt_only_when_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT first; one that is installed but does not import (here: blocked) falls through to
    onnxruntime, saying why. This machine's onnxruntime has no CUDA provider: the CPU runner."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert gpu_runner() == (TENSORRT, "TensorRT imports")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    runner, why = gpu_runner()
    assert runner == ONNX_CPU and why.startswith("TensorRT does not import (") and "onnxruntime-gpu" in why


@pytest.mark.parametrize("command", [
    ["render", "--audio", "speech.wav", "--out", "out.mp4"],
    ["serve", "--port", "0"],
    ["live", "--out", "out.mp4"],
    ["bench", "--sizes", "128"],
])
def test_every_command_refuses_cuda_without_a_gpu(command: list[str], tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "speech.wav"), "wb") as speech:  # render checks its input first
        speech.setnchannels(1)
        speech.setsampwidth(2)
        speech.setframerate(16000)
        speech.writeframes(bytes(16000))
    result = subprocess.run([sys.executable, "-m", "lipstream", *command, "--device", "cuda"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--device cuda" in errors[0] and "--device cpu" in errors[0]


def test_every_server_engine_gets_the_configured_engine_config() -> None:
    engine_config = EngineConfig(device="cpu", seed=7, motion="baseline", bilabial_closure=0.5)
    app = create_app(ServeConfig(engine=engine_config))
    factory = app[api.STATE].engine_factory
    avatar = Avatar.default(AvatarConfig(size=128))
    first, second = factory(avatar), factory(avatar)
    assert isinstance(first, Engine) and isinstance(second, Engine)
    assert first.config == engine_config
    assert first.model.name == "baseline"
    assert first.model is second.model  # one model (one runner) per server, shared by sessions


@pytest.mark.gpu
def test_auto_with_a_gpu_renders_there_like_the_cpu() -> None:
    if not _has_gpu():
        pytest.skip("needs an NVIDIA GPU with CUDA")
    choice = resolve_device("auto")
    assert (choice.device, choice.kernels) == ("cuda", "cuda")
    avatar = Avatar.default(AvatarConfig(size=256))
    audio = (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    frames = {}
    for device in ("cpu", "auto"):
        engine = Engine(avatar, EngineConfig(device=device))
        engine.push_audio(audio, 16000)
        frames[device] = engine.frames()
    for cpu, gpu in zip(frames["cpu"], frames["auto"], strict=True):
        np.testing.assert_allclose(gpu.controls, cpu.controls, atol=0.01)  # fp16 layers on TensorRT
        diff = np.abs(gpu.image.astype(int) - cpu.image.astype(int))
        assert diff.mean() < 1.0  # within one grey level on average
