"""Batched prediction across sessions: an EngineGroup makes exactly the frames each engine makes alone.
The TensorRT runner's batches are checked on a GPU (marker `gpu`); its plan cache key here.

The real shipped model on onnxruntime's CPU runner, real audio-like input that differs per
session, sessions of different lengths (so some ticks batch fewer engines than others).
"""

import sys

import numpy as np
import pytest

from lipstream.bench import speechlike
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.device import TENSORRT
from lipstream.engine.engine import Engine, EngineConfig, Frame
from lipstream.engine.group import EngineGroup
from lipstream.engine.motion import MotionModel, load_motion_model, make_runner, shipped_model_path
from lipstream.engine.runners import OnnxMotionModel
from lipstream.engine.trt_runner import plan_name
from lipstream.errors import GpuError, ModelError
from tests.test_trt_runner import shipped, standin
from tests.trt_on_cpu import TensorRT

__all__ = ["standin"]  # the fixture: TensorRT and the CUDA driver stood in for on the CPU

SESSIONS = 5
SIZE_PX = 192  # small frames: the test is about equality, not looks


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default(AvatarConfig(size=SIZE_PX))


def _inputs() -> list[np.ndarray]:
    """Different speech-like audio per session, 1.2 s to 2.0 s long."""
    return [speechlike(1.2 + 0.2 * i, seed=i) * (0.5 + 0.1 * i) for i in range(SESSIONS)]


def _alone(avatar: Avatar, model: MotionModel, audio: np.ndarray, seed: int) -> list[Frame]:
    """One engine's frames, its audio pushed a frame at a time."""
    engine = Engine(avatar, EngineConfig(seed=seed), model=model)
    frames = []
    for start in range(0, audio.size, SAMPLES_PER_VIDEO_FRAME):
        engine.push_audio(audio[start : start + SAMPLES_PER_VIDEO_FRAME], SAMPLE_RATE)
        frames += engine.frames()
    engine.finish()
    return frames + engine.frames()


def _grouped(avatar: Avatar, model: OnnxMotionModel, inputs: list[np.ndarray]) -> list[list[Frame]]:
    group = EngineGroup(model, max_batch=3)  # 5 sessions: two runner calls per busy tick
    for seed in range(len(inputs)):
        group.add(Engine(avatar, EngineConfig(seed=seed), model=model))
    out: list[list[Frame]] = [[] for _ in inputs]
    ticks = max(-(-a.size // SAMPLES_PER_VIDEO_FRAME) for a in inputs) + 1  # + 1: every finish() runs
    for tick in range(ticks):
        for engine, audio in zip(group.engines, inputs, strict=True):
            chunk = audio[tick * SAMPLES_PER_VIDEO_FRAME : (tick + 1) * SAMPLES_PER_VIDEO_FRAME]
            if chunk.size:
                engine.push_audio(chunk, SAMPLE_RATE)
            elif (tick - 1) * SAMPLES_PER_VIDEO_FRAME < audio.size:
                engine.finish()  # the tick after its audio ran out
        while any(frames := group.step()):
            for i, frame in enumerate(frames):
                if frame is not None:
                    out[i].append(frame)
    return out


@pytest.mark.skipif(shipped_model_path() is None, reason="no shipped motion model in this install")
def test_group_makes_the_frames_each_engine_makes_alone(avatar: Avatar) -> None:
    model = load_motion_model(None)
    assert isinstance(model, OnnxMotionModel)
    inputs = _inputs()
    grouped = _grouped(avatar, model, inputs)
    for seed, audio in enumerate(inputs):
        alone = _alone(avatar, model, audio, seed)
        assert len(grouped[seed]) == len(alone) >= audio.size // SAMPLES_PER_VIDEO_FRAME
        for a, g in zip(alone, grouped[seed], strict=True):
            assert a.index == g.index
            np.testing.assert_array_equal(a.controls, g.controls)
            np.testing.assert_array_equal(a.image, g.image)
            np.testing.assert_array_equal(a.audio, g.audio)
    jaw = np.array([f.controls[0] for f in grouped[SESSIONS - 1]])
    assert np.ptp(jaw) > 0.1  # the mouth moved: equality of frozen faces would prove nothing


@pytest.mark.skipif(shipped_model_path() is None, reason="no shipped motion model in this install")
def test_batched_model_rows_equal_single_windows() -> None:
    model = load_motion_model(None)
    rng = np.random.default_rng(0)
    windows = rng.normal(-3, 1, size=(32, 28, 80)).astype(np.float32)
    batched = model.predict_batch(windows)
    for window, out in zip(windows, batched, strict=True):
        single = model.predict(window)
        np.testing.assert_array_equal(single.controls, out.controls)
        np.testing.assert_array_equal(single.visemes, out.visemes)


def test_an_engine_with_another_model_cannot_join(avatar: Avatar) -> None:
    group = EngineGroup(load_motion_model("baseline"))
    with pytest.raises(ValueError, match="group's model"):
        group.add(Engine(avatar, EngineConfig(), model=load_motion_model("baseline")))


def test_tensorrt_plans_are_cached_per_gpu_tensorrt_version_and_model() -> None:
    base = plan_name("NVIDIA H100 80GB HBM3", "10.7.0", b"model", 64)
    assert base.endswith(".plan") and "nvidia-h100-80gb-hbm3" in base and "trt10.7.0" in base
    others = {plan_name("NVIDIA L4", "10.7.0", b"model", 64), plan_name("NVIDIA H100 80GB HBM3", "10.8.0",
              b"model", 64), plan_name("NVIDIA H100 80GB HBM3", "10.7.0", b"retrained", 64),
              plan_name("NVIDIA H100 80GB HBM3", "10.7.0", b"model", 32)}
    assert base not in others and len(others) == 4


def test_the_tensorrt_runner_without_tensorrt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    path = shipped_model_path()
    if path is None:
        pytest.skip("no shipped motion model in this install")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if it were not installed
    with pytest.raises(ModelError, match=r"pip install lipstream\[gpu\]"):
        make_runner(TENSORRT, path, 28)


def _tensorrt_model() -> OnnxMotionModel:
    path = shipped_model_path()
    if path is None:
        pytest.skip("no shipped motion model in this install")
    try:
        runner = make_runner(TENSORRT, path, 28)
    except (ModelError, GpuError) as err:
        pytest.skip(f"needs an NVIDIA GPU with TensorRT ({err})")
    return OnnxMotionModel(path, runner)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 8, 32, 64])
def test_tensorrt_batches_match_onnxruntime_on_the_cpu(batch: int) -> None:
    gpu, cpu = _tensorrt_model(), load_motion_model(None)
    windows = np.random.default_rng(batch).normal(-3, 1, size=(batch, 28, 80)).astype(np.float32)
    for got, want in zip(gpu.predict_batch(windows), cpu.predict_batch(windows), strict=True):
        np.testing.assert_allclose(got.controls, want.controls, atol=0.01)  # fp16 layers
        np.testing.assert_allclose(got.visemes, want.visemes, atol=0.01)


@pytest.mark.gpu
def test_a_group_on_tensorrt_moves_the_mouth_like_the_cpu(avatar: Avatar) -> None:
    model = _tensorrt_model()
    group = EngineGroup(model)
    for seed in range(SESSIONS):
        group.add(Engine(avatar, EngineConfig(seed=seed), model=model))
    inputs = _inputs()
    for engine, audio in zip(group.engines, inputs, strict=True):
        engine.push_audio(audio, SAMPLE_RATE)
    frames = group.step()
    alone = _alone(avatar, load_motion_model(None), inputs[0], 0)
    assert frames[0] is not None
    np.testing.assert_allclose(frames[0].controls, alone[0].controls, atol=0.01)


def test_a_group_on_the_tensorrt_runner_makes_the_cpu_frames(standin: TensorRT, avatar: Avatar) -> None:
    path = shipped()
    model = OnnxMotionModel(path, make_runner(TENSORRT, path, 28))
    cpu_model = OnnxMotionModel(path)
    inputs = _inputs()[:3]
    grouped = _grouped(avatar, model, inputs)
    for seed, audio in enumerate(inputs):
        alone = _alone(avatar, cpu_model, audio, seed)
        assert [f.controls.tolist() for f in grouped[seed]] == [f.controls.tolist() for f in alone]
