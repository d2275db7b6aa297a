"""The TensorRT runner's host code against CPU stand-ins for TensorRT 10 and cuda-python's driver
API (tests/trt_on_cpu.py): the optimisation profile, the fp16 flag, the plan cache, the device
buffers and copies, TensorRT's object lifetimes, and what is freed. On a GPU the `gpu`-marked tests
in tests/test_batch.py run the real thing.
"""

import gc
import sys
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine import trt_runner
from lipstream.engine.device import TENSORRT
from lipstream.engine.motion import make_runner, shipped_model_path
from lipstream.engine.runners import OnnxRunner
from lipstream.errors import GpuError, ModelError
from lipstream.kernels.driver import NO_DEVICE
from tests.trt_on_cpu import PLAN_MAGIC, CudaDriver, Engine, TensorRT

WINDOW_FRAMES = 28  # the shipped model's context + lookahead


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TensorRT:
    """TensorRT and cuda-python's driver replaced by tests/trt_on_cpu.py's CPU stand-ins."""
    driver = CudaDriver()
    trt = TensorRT(driver)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_runner, "bindings", lambda: (driver, None))
    monkeypatch.setenv("HOME", str(tmp_path))  # the plan cache lives under ~/.cache
    return trt


def shipped() -> Path:
    path = shipped_model_path()
    if path is None:
        pytest.skip("no shipped motion model in this install")
    return path


def _windows(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).normal(-3, 1, size=(batch, WINDOW_FRAMES, 80)).astype(np.float32)


def _plans(home: Path) -> list[Path]:
    return list((home / ".cache" / "lipstream").glob("*"))


def test_tensorrt_runner_host_code_batches_like_onnxruntime(standin: TensorRT) -> None:
    path = shipped()
    runner = make_runner(TENSORRT, path, WINDOW_FRAMES)
    cpu = OnnxRunner(path)
    for batch in (1, 8, 64):
        got, want = runner.run(_windows(batch)), cpu.run(_windows(batch))
        np.testing.assert_array_equal(got.controls, want.controls)
        np.testing.assert_array_equal(got.visemes, want.visemes)
    with pytest.raises(ValueError, match="1 to 64"):
        runner.run(np.zeros((65, WINDOW_FRAMES, 80), np.float32))


def test_tensorrt_engine_has_a_dynamic_batch_profile_fp16_and_is_cached(standin: TensorRT,
                                                                        tmp_path: Path) -> None:
    path = shipped()
    first = make_runner(TENSORRT, path, WINDOW_FRAMES)
    assert isinstance(first, trt_runner.TensorRTRunner)
    header = first._engine.header  # the stand-in engine keeps what the builder was told
    assert header["profiles"] == [{"mel": [[1, 28, 80], [8, 28, 80], [64, 28, 80]]}]
    assert header["flags"] == ["fp16"]
    plans = _plans(tmp_path)  # the plan alone: no part-written file left beside it
    assert len(plans) == 1 and "nvidia-stand-in-80gb" in plans[0].name and "trt10.0.0" in plans[0].name
    second = make_runner(TENSORRT, path, WINDOW_FRAMES)
    assert standin.builds == 1  # the second runner loaded the cached plan
    driver = standin.driver
    first.close()  # frees its three device buffers and its stream, not the other runner's
    assert len(driver.memory) == 3 and driver.streams_destroyed == 1 and driver.contexts_held == 1
    del second  # dropped without close(): freed all the same
    assert driver.memory == {} and driver.streams_destroyed == 2 and driver.contexts_held == 0


def test_tensorrt_11_builds_the_float32_model_without_the_removed_fp16_flag(
        standin: TensorRT, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TensorRT 11 removed BuilderFlag.FP16 and platform_has_fast_fp16 (strong typing only); the
    `gpu` extra's `tensorrt>=10` installs it on a fresh machine."""
    trt11 = TensorRT(standin.driver, version="11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt11)
    runner = make_runner(TENSORRT, shipped(), WINDOW_FRAMES)
    assert isinstance(runner, trt_runner.TensorRTRunner)
    assert runner._engine.header["flags"] == []  # noqa: SLF001 - what the builder was told
    assert "trt11.0.0" in _plans(tmp_path)[0].name
    want = OnnxRunner(shipped()).run(_windows(4)).controls
    np.testing.assert_array_equal(runner.run(_windows(4)).controls, want)


def test_the_tensorrt_runtime_outlives_its_engine(standin: TensorRT) -> None:
    """TensorRT's documented object lifetimes: the runtime that deserialised an engine must live
    as long as the engine (the stand-in's engine checks it on every execution)."""
    runner = make_runner(TENSORRT, shipped(), WINDOW_FRAMES)
    gc.collect()
    assert runner.run(_windows(2)).controls.shape == (2, 5)


def test_a_cached_plan_tensorrt_cannot_read_is_built_again(standin: TensorRT, tmp_path: Path) -> None:
    """A plan cut short (a process stopped while writing it) or corrupt: rebuilt, not an error."""
    path = shipped()
    make_runner(TENSORRT, path, WINDOW_FRAMES).close()
    (plan,) = _plans(tmp_path)
    plan.write_bytes(plan.read_bytes()[: len(PLAN_MAGIC) // 2])
    runner = make_runner(TENSORRT, path, WINDOW_FRAMES)
    assert standin.builds == 2 and plan.read_bytes().startswith(PLAN_MAGIC)
    want = OnnxRunner(path).run(_windows(3)).controls
    np.testing.assert_array_equal(runner.run(_windows(3)).controls, want)


def test_an_engine_whose_tensors_are_not_the_models_contract_is_refused(
        standin: TensorRT, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Engine, "get_tensor_name", lambda self, i: ("input", "controls", "visemes")[i])
    with pytest.raises(ModelError, match="re-export it with 'lipstream train'"):
        make_runner(TENSORRT, shipped(), WINDOW_FRAMES)
    assert standin.driver.memory == {} and standin.driver.contexts_held == 0  # nothing kept


def test_the_tensorrt_runner_without_a_gpu_is_one_clear_error(standin: TensorRT) -> None:
    standin.driver.devices = 0
    with pytest.raises(GpuError, match=NO_DEVICE.replace("[", r"\[").replace("]", r"\]")):
        make_runner(TENSORRT, shipped(), WINDOW_FRAMES)
