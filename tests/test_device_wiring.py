"""The device renderer wired in: an Engine whose device resolved to CUDA draws through
`DeviceRenderer` (I420 out, RGB only when asked) and a server session's producer sends that I420 as
it is. On the stand-in driver that runs render.cu on the CPU (tests/cuda_on_cpu.py); on a real GPU
(marker `gpu`) the same engine check.
"""

import asyncio
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lipstream.bench import speechlike
from lipstream.engine import engine as engine_module
from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.device import CPU_CHOICE, ONNX_CPU, DeviceChoice
from lipstream.engine.engine import Engine, EngineConfig, Frame
from lipstream.errors import GpuError
from lipstream.kernels.device_render import DeviceRenderer
from lipstream.offline import _render
from lipstream.streaming.clock import ManualClock, MediaClock
from lipstream.streaming.files import Mp4Writer
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.tracks import SessionVideoTrack
from lipstream.streaming.worker import FrameProducer, FrameRing, ReadyFrame, RenderPool
from tests.cuda_on_cpu import CpuDriver
from tests.test_kernels_device_render import assert_within_one_level, driver, lib

__all__ = ["driver", "lib"]  # fixtures: the stand-in driver installed for DeviceRenderer

SPEECH_S = 0.8  # 20 frames: closures and open vowels, a blink-free stretch is not needed
ON_GPU = EngineConfig(seed=3, device="auto")  # with `on_gpu`, the stand-in
IDLE_S = 2.4  # silence: the smoothed mouth settles within ~1 s, then pictures repeat
GPU = DeviceChoice("cuda", ONNX_CPU, "cuda", "the stand-in driver")


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    return load_audio(speech_wav)[: int(SPEECH_S * SAMPLE_RATE)]


@pytest.fixture()
def on_gpu(monkeypatch: pytest.MonkeyPatch, driver: CpuDriver) -> CpuDriver:
    """An engine asking for "auto" finds the GPU (its motion model stays on the CPU runner: only the
    engine module's resolution is replaced); "cpu" stays the CPU."""
    monkeypatch.setattr(engine_module, "resolve_device",
                        lambda requested: GPU if requested == "auto" else CPU_CHOICE)
    return driver


def run(engine: Engine, audio: np.ndarray) -> list[Frame]:
    engine.push_audio(audio, SAMPLE_RATE)
    engine.finish()
    return engine.frames()


def test_an_engine_on_the_device_draws_the_cpu_engines_frames(on_gpu: CpuDriver, avatar: Avatar,
                                                             speech: np.ndarray) -> None:
    cpu_frames = run(Engine(avatar, EngineConfig(seed=3)), speech)
    device = Engine(avatar, ON_GPU)
    assert isinstance(device.renderer, DeviceRenderer)
    frames = run(device, speech)
    assert len(frames) == len(cpu_frames) > 0
    pictures = {id(f.yuv) for f in frames}  # an idle face repeats one: it is not drawn again
    assert on_gpu.downloaded == [frames[0].yuv.nbytes] * len(pictures)  # one copy down per picture
    for got, want in zip(frames, cpu_frames, strict=True):
        assert np.array_equal(got.controls, want.controls)
        assert not got.yuv.flags.writeable
        assert_within_one_level(got.yuv, want.yuv)


def test_a_device_frames_rgb_is_its_i420_converted_once(on_gpu: CpuDriver, avatar: Avatar,
                                                        speech: np.ndarray) -> None:
    engine = Engine(avatar, ON_GPU)
    engine.push_audio(speech, SAMPLE_RATE)
    engine.finish()
    drawn = engine.pop_frame()
    skipped = engine.pop_frame(render=False)
    assert drawn is not None and skipped is not None
    assert skipped.yuv is drawn.yuv and not skipped.rendered  # a skip repeats the picture
    image = drawn.image
    assert image.shape == (avatar.size, avatar.size, 3) and not image.flags.writeable
    assert np.array_equal(image, cv2.cvtColor(drawn.yuv, cv2.COLOR_YUV2RGB_I420))
    assert skipped.image is image  # converted once, for every frame showing it


def test_a_cpu_frames_i420_is_its_rgb_converted_once(avatar: Avatar, speech: np.ndarray) -> None:
    engine = Engine(avatar, EngineConfig(seed=3, device="cpu"))
    assert not isinstance(engine.renderer, DeviceRenderer)
    frames = run(engine, speech)
    for frame in frames:
        assert np.array_equal(frame.yuv, cv2.cvtColor(frame.image, cv2.COLOR_RGB2YUV_I420))
    engine.push_audio(np.zeros(SAMPLE_RATE // 5, np.float32), SAMPLE_RATE)
    engine.finish()
    last, skipped = engine.pop_frame(), engine.pop_frame(render=False)
    assert last is not None and skipped is not None and skipped.yuv is last.yuv


def repeats(frames: list[Frame]) -> list[bool]:
    """Whether each frame shows the very picture of the one before."""
    return [b.yuv is a.yuv for a, b in zip(frames, frames[1:], strict=False)]


def test_an_idle_face_on_the_device_is_not_drawn_again(on_gpu: CpuDriver, avatar: Avatar) -> None:
    """Silence settles the mouth: the device repeats the picture exactly where the CPU renderer
    does (same controls, head pose and blink), launching and copying nothing for it."""
    silence = np.zeros(int(IDLE_S * SAMPLE_RATE), np.float32)
    cpu_frames = run(Engine(avatar, EngineConfig(seed=3)), silence)
    frames = run(Engine(avatar, ON_GPU), silence)
    assert repeats(frames) == repeats(cpu_frames) and any(repeats(frames))
    assert len(on_gpu.downloaded) == len(frames) - sum(repeats(frames))


class Recording:
    """The real engine, keeping every frame it hands the producer."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.frames = engine, list[Frame]()
        self.latency_samples = engine.latency_samples

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        self.engine.push_audio(pcm, sample_rate)

    def pop_frame(self, render: bool = True) -> Frame | None:
        frame = self.engine.pop_frame(render)
        if frame is not None:
            self.frames.append(frame)
        return frame


async def produce(engine: Recording, inbox: AudioInbox, frames: int) -> tuple[list[ReadyFrame], list]:
    """`frames` frames made by a session's producer on a manual clock, and what its video track sent."""
    clock = ManualClock()
    media = MediaClock(clock)
    pool, ring = RenderPool(1), FrameRing(media)
    producer = FrameProducer(engine, inbox, media, pool, ring, ServerMetrics())
    media.start()
    task = asyncio.create_task(producer.run())
    track, made, sent = SessionVideoTrack(ring, media), list[ReadyFrame](), []
    for index in range(frames):
        while ring.get(index) is None:
            while clock.sleepers == 0:
                await asyncio.sleep(0.001)
            clock.release_next()
        made.append(ring.get(index))
        sent.append(await track.recv())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pool.shutdown()
    return made, sent


async def test_a_session_sends_the_device_engines_i420_as_drawn(on_gpu: CpuDriver, avatar: Avatar,
                                                                speech: np.ndarray) -> None:
    engine = Recording(Engine(avatar, ON_GPU))
    inbox = AudioInbox()
    inbox.push(speech)
    made, sent = await produce(engine, inbox, 8)
    drawn = engine.frames[:8]
    assert all(f.picture._rgb is None for f in drawn)  # no RGB was made for the server  # noqa: SLF001
    for ready, video, frame in zip(made, sent, drawn, strict=True):
        assert ready.yuv is frame.yuv  # the device's own array, not a conversion of it
        assert np.array_equal(video.to_ndarray(), frame.yuv)


def test_render_writes_the_device_engines_i420_as_drawn(on_gpu: CpuDriver, avatar: Avatar,
                                                        speech: np.ndarray, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`lipstream render` on the GPU hands the file writer the I420 the device drew (no RGB made
    from it and converted back) and so writes the very frames the CPU render writes."""
    cpu = rendered(Engine(avatar, EngineConfig(seed=3)), speech, tmp_path / "cpu.mp4", monkeypatch)
    monkeypatch.setattr(engine_module.Picture, "rgb", property(no_rgb))
    device = rendered(Engine(avatar, ON_GPU), speech, tmp_path / "gpu.mp4", monkeypatch)
    assert len(cpu) > 10 and sorted(device) == sorted(cpu) == list(range(len(cpu)))
    for index, yuv in device.items():
        assert np.array_equal(yuv, cpu[index]), f"frame {index} differs"
    with av.open(str(tmp_path / "gpu.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(cpu)


def rendered(engine: Engine, audio: np.ndarray, out: Path,
             monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """What `render`'s loop hands its Mp4Writer for `audio`, by frame index (the file is written)."""
    written: dict[int, np.ndarray] = {}
    write_i420 = Mp4Writer.write_i420

    def record(writer: Mp4Writer, yuv: np.ndarray, index: int) -> None:
        written[index] = yuv.copy()
        write_i420(writer, yuv, index)

    monkeypatch.setattr(Mp4Writer, "write_i420", record)
    _render([audio], None, engine, Mp4Writer(out, engine.avatar.size), progress=False)
    monkeypatch.setattr(Mp4Writer, "write_i420", write_i420)
    return written


def no_rgb(picture: object) -> np.ndarray:
    raise AssertionError("an RGB picture was made from the device's I420")


@pytest.mark.gpu
def test_an_engine_on_a_gpu_draws_the_cpu_engines_frames(avatar: Avatar) -> None:
    speech = speechlike(SPEECH_S, seed=3)  # not espeak-ng: a fresh GPU machine may lack it
    try:
        device = Engine(avatar, EngineConfig(seed=3, device="cuda"))
    except GpuError as err:
        pytest.skip(f"needs an NVIDIA GPU with CUDA ({err})")
    assert isinstance(device.renderer, DeviceRenderer)
    cpu_frames = run(Engine(avatar, EngineConfig(seed=3, device="cpu")), speech)
    for got, want in zip(run(device, speech), cpu_frames, strict=True):
        assert_within_one_level(got.yuv, want.yuv)
