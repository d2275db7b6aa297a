"""The Pipecat service inside Pipecat's own Pipeline, PipelineTask and PipelineRunner: espeak speech in
as TTS audio frames, a talking face and the same audio out, at 25 fps, and a barge-in."""

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat extra is not installed: pip install 'lipstream[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    Frame,
    OutputImageRawFrame,
    StartInterruptionFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402

from lipstream import VIDEO_FPS, Avatar, AvatarConfig, Engine, EngineConfig, PacingConfig  # noqa: E402
from lipstream.errors import GpuError  # noqa: E402
from lipstream.integrations.pipecat import FRAME_NS, LipstreamVideoService  # noqa: E402
from lipstream.streaming.clock import FRAME_S, Clock, MonotonicClock  # noqa: E402
from lipstream.training.evaluate import MouthMeter  # noqa: E402
from tests.conftest import espeak_wav  # noqa: E402
from tests.producing import ParkingClock  # noqa: E402
from tests.test_readme import _blocks  # noqa: E402

TTS_CHUNK_MS = 20  # what a streaming TTS hands out at a time
REST_TOLERANCE = 0.01  # of the face height: FaceMesh's jitter on a closed mouth
OPEN = 4 * REST_TOLERANCE  # a lip gap no jitter makes
STUCK_POLLS = 60_000  # of 1 ms or more
IMAGE_WAIT_POLLS = 2000  # of 1 ms: a frame's image reaches the sink in far less, unless dropped


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default(AvatarConfig(size=256))  # big enough for FaceMesh to read the lips


@dataclass
class Speech:
    pcm: np.ndarray  # (n,) int16, as espeak made it
    rate: int  # Hz

    def tts_frames(self) -> Iterator[TTSAudioRawFrame]:
        step = self.rate * TTS_CHUNK_MS // 1000
        for start in range(0, self.pcm.size, step):
            yield TTSAudioRawFrame(self.pcm[start : start + step].tobytes(), self.rate, 1)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    from scipy.io import wavfile

    path = espeak_wav(tmp_path_factory.mktemp("pipecat") / "hi.wav",
                      "Papa bought a big map. Bob, look at the moon! Maybe we will walk home.")
    rate, pcm = wavfile.read(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    return Speech(pcm, rate)


class Sink(FrameProcessor):
    """The end of the pipeline: keeps what the service sent, with the pacing clock's time."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.images: list[tuple[OutputImageRawFrame, float]] = []
        self.audio: list[TTSAudioRawFrame] = []
        self.seen: list[type] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self.images.append((frame, self.clock.now()))
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio.append(frame)
        self.seen.append(type(frame))
        await self.push_frame(frame, direction)


class Upstream(FrameProcessor):
    """The start of the pipeline: keeps the errors sent upstream to it."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame) and direction == FrameDirection.UPSTREAM:
            self.errors.append(frame.error)
        await self.push_frame(frame, direction)


class Run:
    """One pipeline [head, service, sink] on Pipecat's runner, its pacing clock driven by the test."""

    def __init__(self, avatar: Avatar, pacing: PacingConfig | None = None,
                 head: Upstream | None = None, engine: Engine | None = None) -> None:
        self.clock = ParkingClock()
        self.origin = self.clock.now()  # frame 0 is due at the service's first request: at once
        self.sink = Sink(self.clock)
        service = LipstreamVideoService(engine or Engine(avatar, EngineConfig(seed=1)), pacing=pacing,
                                        clock=self.clock)
        processors = [service, self.sink] if head is None else [head, service, self.sink]
        self.task = PipelineTask(Pipeline(processors), PipelineParams(allow_interruptions=True))
        self.running = asyncio.create_task(PipelineRunner(handle_sigint=False).run(self.task))
        self.at_frame = 0  # the clock stands at this frame's due time

    async def until_seen(self, kind: type, count: int = 1) -> None:
        await poll(lambda: self.sink.seen.count(kind) >= count, f"{kind.__name__} #{count} at the sink")

    async def frames(self, n: int) -> None:
        """Move the clock on by `n` frames, each only once the last one's image has reached the sink.
        A frame may wait more than once on the clock (for its start, its audio, its due time): the
        clock goes from deadline to deadline, each released only once the service waits on it."""
        for _ in range(n):
            await self._delivered()
            self.at_frame += 1
            while self.clock.now() < self.origin + self.at_frame * FRAME_S or self.clock.overdue():
                await poll(lambda: self.clock.waiting > 0, "the service waiting for its next frame")
                await self.clock.step()
        await self._delivered()

    async def _delivered(self) -> None:
        """Wait for the image of the frame due now (not for ever: Pipecat drops what a processor
        had queued when an interruption comes)."""
        images = self.sink.images
        for _ in range(IMAGE_WAIT_POLLS):
            if images and images[-1][0].pts // FRAME_NS >= self.first_index + self.at_frame:
                return
            await asyncio.sleep(0.001)

    @property
    def first_index(self) -> int:
        """The index of this run's first frame: an Engine handed on from another pipeline goes on."""
        return self.sink.images[0][0].pts // FRAME_NS if self.sink.images else 0

    async def end(self) -> None:
        await self.task.queue_frame(EndFrame())
        await asyncio.wait_for(self.running, timeout=30)

    async def cancel(self) -> None:
        """As PipelineRunner does on SIGINT: a CancelFrame out of band, the task's loops cancelled."""
        await self.task.cancel()
        await asyncio.wait_for(self.running, timeout=30)


async def poll(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`; a stuck pipeline fails the test instead of hanging it."""
    for _ in range(STUCK_POLLS):
        if condition():
            return
        await asyncio.sleep(0.001)
    pytest.fail(f"waited in vain for {what}")


def assert_audio_is(speech: Speech, audio: list[TTSAudioRawFrame]) -> int:
    """Audio out == audio in: each 40 ms of speech leaves once, bit-exact, at the TTS's rate, on
    consecutive video frames (no silence let in). Returns the frame on which the speech begins."""
    spoken = [(n, chunk) for n, chunk in enumerate(frames_of(speech)) if chunk.any()]
    assert {frame.sample_rate for frame in audio} == {speech.rate}
    out = [np.frombuffer(frame.audio, np.int16).tolist() for frame in audio]
    assert out == [chunk.tolist() for _, chunk in spoken]
    first = audio[0].pts // FRAME_NS - spoken[0][0]
    assert [frame.pts // FRAME_NS - first for frame in audio] == [n for n, _ in spoken]
    return int(first)


def apertures(images: list[tuple[OutputImageRawFrame, float]]) -> np.ndarray:
    meter = MouthMeter()
    try:
        return np.array([meter.read(image_of(frame)).aperture for frame, _ in images])
    finally:
        meter.close()


def image_of(frame: OutputImageRawFrame) -> np.ndarray:
    width, height = frame.size
    return np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)


def frames_of(speech: Speech) -> list[np.ndarray]:
    """The input cut into 40 ms frames, the last one padded with silence (as end_segment does)."""
    per_frame = speech.rate // VIDEO_FPS
    padded = np.concatenate([speech.pcm, np.zeros(-speech.pcm.size % per_frame, np.int16)])
    return list(padded.reshape(-1, per_frame))


async def test_a_tts_turn_becomes_25_fps_frames_with_its_audio_bit_exact(
        avatar: Avatar, speech: Speech) -> None:
    run = Run(avatar)
    await run.frames(VIDEO_FPS // 2)  # half a second of idle face before the bot speaks
    await run.task.queue_frames([TTSStartedFrame(), *speech.tts_frames(), TTSStoppedFrame()])
    await run.until_seen(TTSStoppedFrame)
    await run.frames(len(frames_of(speech)) + VIDEO_FPS)
    await run.end()

    images, audio = run.sink.images, run.sink.audio
    assert all(frame.format == "RGB" and frame.size == (256, 256) for frame, _ in images)
    assert [frame.pts for frame, _ in images] == [n * FRAME_NS for n in range(len(images))]
    origin = images[0][1]
    assert all(t == pytest.approx(origin + frame.pts / 1e9) for frame, t in images)  # paced at 25 fps

    first = assert_audio_is(speech, audio)

    # The mouth moves with the speech: open while it speaks, at rest before.
    gap = apertures(images)
    idle, talking = gap[:first], gap[first : first + len(frames_of(speech))]
    assert idle.max() < idle.min() + REST_TOLERANCE
    assert talking.max() > idle.max() + OPEN
    assert (talking > idle.max() + REST_TOLERANCE).mean() > 0.3


async def test_tts_audio_the_face_cannot_use_is_said_upstream_and_the_turn_goes_on(
        avatar: Avatar, speech: Speech) -> None:
    """Bytes that are not whole samples, or a rate of 0, from a TTS: each raised inside the service
    (a ValueError, a ZeroDivisionError), and the turn's end never reached the next processor."""
    head = Upstream()
    run = Run(avatar, head=head)
    await run.frames(2)
    bad = [TTSAudioRawFrame(audio=bytes(3), sample_rate=speech.rate, num_channels=1),
           TTSAudioRawFrame(audio=bytes(4), sample_rate=0, num_channels=1),
           TTSAudioRawFrame(audio=bytes(6), sample_rate=speech.rate, num_channels=4)]
    await run.task.queue_frames([TTSStartedFrame(), bad[0], *speech.tts_frames(), *bad[1:],
                                 TTSStoppedFrame()])
    await run.until_seen(TTSStoppedFrame)
    await run.frames(len(frames_of(speech)) + VIDEO_FPS)
    await run.end()

    assert len(head.errors) == len(bad), head.errors
    assert all("TTS audio" in error or "sample rate" in error for error in head.errors), head.errors
    assert_audio_is(speech, run.sink.audio)  # every good sample played, as it was sent


LONGEST_LEAD = PacingConfig(min_lead_ms=PacingConfig().lead_ms)  # a slow machine, a late-waking loop
STALL_AT_CHUNK = 21  # mid-utterance


@pytest.mark.parametrize(("pacing", "stall_frames"),
                         [(PacingConfig(), 0), (LONGEST_LEAD, 0), (LONGEST_LEAD, 2)],
                         ids=["learnt-lead", "longest-lead", "longest-lead-after-a-stall"])
async def test_a_tts_streaming_in_real_time_lets_no_silence_into_its_words(
        avatar: Avatar, speech: Speech, pacing: PacingConfig, stall_frames: int) -> None:
    """20 ms of speech per 20 ms of clock, as a live TTS streams it. With the longest lead each
    frame starts as soon as the last one is out, before the TTS's next chunks; after the TTS stalls
    for two frames, the audio of each frame comes only after that start (as the clock reaches the
    last frame's due time): the frame must wait for it, not end the turn there."""
    run = Run(avatar, pacing)
    await run.frames(VIDEO_FPS // 2)
    await run.task.queue_frame(TTSStartedFrame())
    for n, chunk in enumerate(speech.tts_frames()):  # 20 ms of speech per 20 ms, as a live TTS streams
        await run.task.queue_frames([chunk, TextFrame(f"chunk {n}")])
        await run.until_seen(TextFrame, n + 1)  # the service has taken the chunk
        if n % 2:
            await run.frames(1)
        if n == STALL_AT_CHUNK:
            await run.frames(stall_frames)
    await run.task.queue_frame(TTSStoppedFrame())
    await run.until_seen(TTSStoppedFrame)
    await run.frames(2 * VIDEO_FPS)
    await run.end()
    assert_audio_is(speech, run.sink.audio)


async def test_an_interruption_mid_utterance_brings_the_mouth_to_rest_within_3_frames(
        avatar: Avatar, speech: Speech) -> None:
    run = Run(avatar)
    await run.frames(VIDEO_FPS // 2)
    rest = apertures(run.sink.images).max()
    await run.task.queue_frames([TTSStartedFrame(), *speech.tts_frames()])  # the turn has not ended
    live = MouthMeter(static=True)
    try:
        for _ in frames_of(speech):  # until the bot is mid-word with its mouth open
            await run.frames(1)
            if run.sink.audio and live.read(image_of(run.sink.images[-1][0])).aperture > rest + OPEN:
                break
        else:
            pytest.fail("the mouth never opened")
    finally:
        live.close()
    await run.task.queue_frame(StartInterruptionFrame())
    await run.until_seen(StartInterruptionFrame)
    cut, talked = len(run.sink.images), len(run.sink.audio)
    await run.frames(VIDEO_FPS)
    await run.end()

    after = apertures(run.sink.images)[cut:]
    assert after[2:].max() < rest + REST_TOLERANCE, after.round(3)  # at rest by the 3rd frame, and stays
    assert len(run.sink.audio) <= talked + 1  # the rest of the speech was dropped, not played


@pytest.mark.parametrize("stop", ["end", "cancel"])
async def test_a_pipeline_rebuilt_over_the_same_engine_runs_once_the_first_stopped(
        avatar: Avatar, speech: Speech, stop: str) -> None:
    """The service never closed its AsyncEngine, which holds the Engine: a second service over that
    Engine was refused (ConfigError) after the first pipeline had ended or been cancelled."""
    engine = Engine(avatar, EngineConfig(seed=1))
    first = Run(avatar, engine=engine)
    await first.frames(2)
    await (first.end() if stop == "end" else first.cancel())
    second = Run(avatar, engine=engine)  # `first` is still referenced: its claim is not dropped by gc
    await second.frames(2)
    await second.task.queue_frames([TTSStartedFrame(), *speech.tts_frames(), TTSStoppedFrame()])
    await second.until_seen(TTSStoppedFrame)
    await second.frames(len(frames_of(speech)) + VIDEO_FPS)
    await second.end()
    indices = [frame.pts // FRAME_NS for frame, _ in second.sink.images]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    assert indices[0] > first.sink.images[-1][0].pts // FRAME_NS  # the Engine goes on where it was
    assert_audio_is(speech, second.sink.audio)  # with the speech in sync


async def test_a_fatal_engine_error_ends_the_pipeline_and_lets_the_engine_go(
        avatar: Avatar, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine error while making frames (a GPU lost: injected, no GPU here) goes upstream as fatal.
    Pipecat's answer, a CancelFrame, came back inside the render task that pushed the error, which
    then awaited itself: the pipeline hung, and the Engine stayed held."""
    engine = Engine(avatar, EngineConfig(seed=1))

    def lost(render: bool = True) -> None:
        raise GpuError("the GPU is gone")

    monkeypatch.setattr(engine, "pop_frame", lost)
    head = Upstream()
    first = Run(avatar, head=head, engine=engine)
    await asyncio.wait_for(first.running, timeout=10)
    assert head.errors == ["the GPU is gone"]
    monkeypatch.undo()
    second = Run(avatar, engine=engine)
    await second.frames(2)
    await second.end()
    assert len(second.sink.images) == 3


class StandInTransport:
    """What the README's `transport` stands for: `output()` ends the pipeline."""

    def __init__(self) -> None:
        self.sink: Sink | None = None

    def output(self) -> Sink:
        self.sink = Sink(MonotonicClock())
        return self.sink


def test_the_readme_pipecat_example_runs(speech: Speech) -> None:
    speech = Speech(speech.pcm[: 2 * speech.rate], speech.rate)  # two seconds: said within the block's three
    blocks = _blocks("Use it from Pipecat")
    assert len(blocks) == 1
    transport = StandInTransport()
    exec(compile(blocks[0], "README Pipecat block", "exec"),
         {"tts_frames": list(speech.tts_frames()), "transport": transport})
    assert transport.sink is not None
    images, audio = transport.sink.images, transport.sink.audio
    assert images and [frame.pts for frame, _ in images] == [n * FRAME_NS for n in range(len(images))]
    assert_audio_is(speech, audio)
