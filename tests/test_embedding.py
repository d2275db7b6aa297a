"""lipstream embedded in another program: a typed API, turns, audio back at the caller's rate,
read-only images, and the controls without a photo (MotionStream)."""

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from textwrap import dedent
from typing import TypeVar

import numpy as np
import pytest
from scipy.signal import resample_poly

from lipstream import (
    CONTROL_NAMES,
    SAMPLES_PER_VIDEO_FRAME,
    VIDEO_FPS,
    AsyncEngine,
    Avatar,
    AvatarConfig,
    Engine,
    EngineConfig,
    Frame,
    MotionStream,
    PacingConfig,
)
from lipstream.engine.audio import load_audio
from lipstream.engine.controls import JAW_OPEN
from lipstream.errors import AudioError
from lipstream.streaming.asyncengine import EngineCalls
from lipstream.streaming.clock import ManualClock
from tests.conftest import REPO, espeak_wav
from tests.producing import LateClock, ParkingClock, run_parked


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default(AvatarConfig(size=128))


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = espeak_wav(tmp_path_factory.mktemp("turns") / "turn.wav", "Maybe. Papa bought a map.")
    return load_audio(path)


EMBEDDER = """
import numpy as np
from lipstream import Avatar, Engine, EngineConfig, Frame

def talk(avatar: Avatar) -> list[Frame]:
    engine = Engine(avatar, EngineConfig(seed=1))
    engine.push_audio(np.zeros(16_000, np.float32), sample_rate=16_000)
    engine.end_segment()
    return engine.frames()
"""


def test_mypy_strict_sees_the_real_types_of_the_public_api(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(dedent(EMBEDDER))
    (tmp_path / "bad.py").write_text(dedent(EMBEDDER).replace("push_audio", "push_audoi"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), str(tmp_path / "good.py"), str(tmp_path / "bad.py")],
        cwd=REPO, capture_output=True, text=True, env=os.environ | {"MYPYPATH": str(REPO)}, timeout=300)
    lines = [line for line in result.stdout.splitlines() if "error" in line]
    assert lines, result.stdout + result.stderr  # the misspelt method is caught...
    assert all("bad.py" in line and "push_audoi" in line for line in lines), lines  # ...and only it


def _segments(speech_16k: np.ndarray, rate: int) -> list[np.ndarray]:
    """Three turns at `rate`: int16 speech, different lengths (not whole frames)."""
    at_rate = resample_poly(speech_16k, rate // 1000, 16)
    pcm = (np.clip(at_rate, -1, 1) * 32767).astype(np.int16)
    third, loud = pcm.size // 3, np.abs(pcm) > 100
    starts = [int(np.flatnonzero(loud[third * k // 2 :])[0]) + third * k // 2 for k in (0, 1, 2)]
    return [pcm[start : start + third + 37 * k] for k, start in enumerate(starts)]  # each starts voiced


@pytest.mark.parametrize("rate", [24_000, 48_000])
def test_turns_give_frames_for_all_their_audio_at_the_pushed_rate(
        avatar: Avatar, speech_16k: np.ndarray, rate: int) -> None:
    engine = Engine(avatar, EngineConfig(seed=2))
    per_frame = rate // VIDEO_FPS
    frames: list[Frame] = []
    for segment in _segments(speech_16k, rate):
        for i in range(0, segment.size, 480):  # 10-20 ms chunks, as a TTS streams them
            engine.push_audio(segment[i : i + 480], rate)
            frames += engine.frames()
        engine.end_segment()
        frames += engine.frames()
        engine.push_audio(np.zeros(rate // 2, np.int16), rate)  # half a second of nobody speaking
        engine.end_segment()
        frames += engine.frames()
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.input_rate == rate and f.input_audio.dtype == np.int16 for f in frames)
    assert all(f.input_audio.shape == (per_frame,) for f in frames)
    tape = np.concatenate([f.input_audio for f in frames])
    for segment in _segments(speech_16k, rate):
        # each turn starts on a frame of its own (after the last turn's padding: whole silent frames)
        start = next(f.index for f in frames if np.array_equal(f.input_audio, segment[:per_frame]))
        np.testing.assert_array_equal(tape[start * per_frame : start * per_frame + segment.size], segment)
        gap = slice(start * per_frame + segment.size, start * per_frame + segment.size + rate // 2)
        assert not np.any(tape[gap])  # padding and pushed silence, nothing invented
        rest = [f for f in frames if start * per_frame + segment.size + rate // 4 <= f.index * per_frame
                < start * per_frame + segment.size + rate // 2]
        assert rest and max(f.controls[JAW_OPEN] for f in rest) < 0.1  # the mouth rests in the gap
    assert max(f.controls[JAW_OPEN] for f in frames) > 0.3  # and it did speak


@pytest.mark.parametrize("idle_ends", [1, 3], ids=["idling", "turns-ended-before-any-speech"])
def test_a_first_turn_after_idle_frames_leaves_with_its_own_frames(avatar: Avatar, idle_ends: int) -> None:
    """Frames made before any push (a paced AsyncEngine idles this way; a careless caller ends
    turns it never began): the first turn's audio must come back with the frames made from it.
    Its pushed audio came back that many frames early, the voice ahead of the mouth."""
    engine, frames = Engine(avatar), list[Frame]()
    for _ in range(VIDEO_FPS // 5):
        for _ in range(idle_ends):
            engine.end_segment()
        frames += engine.frames()
    turn = np.full(24_000 * 2 // 5, 0.25, np.float32)  # 0.4 s of a 24 kHz TTS: 10 frames
    engine.push_audio(turn, 24_000)
    engine.end_segment()
    frames += engine.frames()
    assert [f.index for f in frames] == list(range(len(frames)))
    heard = [f.index for f in frames if f.audio.any()]  # what the model made the mouth from
    played = [f.index for f in frames if f.input_audio.any()]  # what the caller plays with them
    assert played == heard and len(played) == 10


def test_more_audio_after_finish_makes_more_frames(avatar: Avatar, speech_16k: np.ndarray) -> None:
    engine = Engine(avatar)
    engine.push_audio(speech_16k[:16_000], 16_000)
    engine.finish()
    first = engine.frames()
    assert len(first) == VIDEO_FPS
    engine.push_audio(speech_16k[16_000:32_000], 16_000)  # a second turn after a finished file
    engine.finish()
    second = engine.frames()
    assert len(second) >= VIDEO_FPS and second[0].index == first[-1].index + 1


def test_a_turn_ended_after_finish_goes_on_in_silence(avatar: Avatar) -> None:
    """A paced AsyncEngine after close() makes its idle frames with end_segment(), as after any turn.
    After finish() that made no frame ready: the idle loop ended turns forever in the engine's
    thread, silence piling up, the consumer and every later call waiting on it."""
    engine = Engine(avatar)
    engine.push_audio(np.full(5 * SAMPLES_PER_VIDEO_FRAME, 0.25, np.float32), 16_000)
    engine.finish()
    spoken = engine.frames()
    engine.end_segment()
    after = engine.frames()
    assert len(spoken) == 5 and after and after[0].index == 5
    assert not any(f.input_audio.any() for f in after)


def test_rate_changes_only_between_turns(avatar: Avatar) -> None:
    engine = Engine(avatar)
    engine.push_audio(np.zeros(1000, np.int16), 24_000)  # 1000 is not a whole frame (960)
    with pytest.raises(AudioError, match="end_segment"):
        engine.push_audio(np.zeros(1000, np.int16), 48_000)
    engine.end_segment()
    engine.push_audio(np.zeros(4000, np.int16), 48_000)
    engine.end_segment()
    rates = [f.input_rate for f in engine.frames()]
    assert rates[0] == 24_000 and rates[-1] == 48_000


def test_images_are_read_only_and_a_skipped_frame_repeats_the_last(avatar: Avatar) -> None:
    engine = Engine(avatar)
    engine.push_audio(np.zeros(engine.latency_samples + 640, np.float32), 16_000)
    shown, skipped = engine.pop_frame(), engine.pop_frame(render=False)
    assert shown is not None and skipped is not None and not skipped.rendered
    assert skipped.image is shown.image and not shown.image.flags.writeable
    with pytest.raises(ValueError):
        shown.image[0, 0, 0] = 1


def test_motion_stream_gives_the_engines_controls_without_a_photo(
        avatar: Avatar, speech_16k: np.ndarray) -> None:
    stream, engine = MotionStream(), Engine(avatar)
    for sink in (stream, engine):
        sink.push_audio(speech_16k, 16_000)
        sink.end_segment()
    motion, frames = stream.frames(), engine.frames()
    assert len(motion) == len(frames) > 0
    for m, f in zip(motion, frames, strict=True):
        assert m.index == f.index and m.pts == f.pts
        np.testing.assert_array_equal(m.controls, f.controls)
        assert m.controls.shape == (len(CONTROL_NAMES),) and m.visemes is not None


async def test_async_engine_makes_the_same_frames_as_the_engine(
        avatar: Avatar, speech_16k: np.ndarray) -> None:
    reference = Engine(avatar, EngineConfig(seed=4))
    reference.push_audio(speech_16k, 16_000)
    reference.finish()
    expected = reference.frames()
    engine = AsyncEngine(Engine(avatar, EngineConfig(seed=4)), paced=False)

    async def produce() -> None:
        for i in range(0, speech_16k.size, 1_000):
            await engine.push_audio(speech_16k[i : i + 1_000], 16_000)
            await asyncio.sleep(0)
        await engine.close()

    producer = asyncio.create_task(produce())
    got = [frame async for frame in engine]
    await producer
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.index == b.index
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.input_audio, b.input_audio)


async def test_paced_async_engine_keeps_25_fps_and_idles_between_turns(
        avatar: Avatar, speech_16k: np.ndarray) -> None:
    clock = ManualClock()
    engine = AsyncEngine(Engine(avatar), clock=clock)
    n_frames = 3 * VIDEO_FPS
    handed: list[tuple[Frame, float]] = []

    async def consume() -> None:
        async for frame in engine:
            handed.append((frame, clock.now()))
            if frame.index == VIDEO_FPS // 2:  # half a second of idling, then a turn
                await engine.push_audio(speech_16k[: 2 * 16_000], 16_000)
                await engine.end_segment()
            if len(handed) == n_frames:
                return

    await released(clock, asyncio.create_task(consume()))
    origin = handed[0][1]
    assert [f.index for f, _ in handed] == list(range(n_frames))
    assert all(t == pytest.approx(origin + f.index / VIDEO_FPS) for f, t in handed)
    jaw = np.array([f.controls[JAW_OPEN] for f, _ in handed])
    assert jaw[: VIDEO_FPS // 2].max() < 0.05 and jaw.max() > 0.3  # idle, then speech


T = TypeVar("T")
STUCK_S = 60.0  # real time a clock-driven wait may take before the test calls it stuck (it takes < 1 s)


async def released(clock: ManualClock, task: "asyncio.Task[T]") -> T:
    """`task`'s result, the test's clock releasing its sleepers one at a time until it is done;
    a task still not done after STUCK_S of real time fails the test instead of hanging the run."""
    stuck_at = time.monotonic() + STUCK_S
    while not task.done():
        await asyncio.sleep(0.001)
        if clock.sleepers:
            clock.release_next()
        if time.monotonic() > stuck_at:
            task.cancel()
            pytest.fail(f"stuck: not done after {STUCK_S:g} s")
    return await task


class SlowRenders(Engine):
    """An Engine on a slow machine: each render takes `cost_s` on the test's clock."""

    def __init__(self, avatar: Avatar, clock: LateClock, cost_s: float) -> None:
        super().__init__(avatar)
        self.clock, self.cost_s = clock, cost_s

    def pop_frame(self, render: bool = True) -> Frame | None:
        frame = super().pop_frame(render)
        if frame is not None and render:
            self.clock.spend(self.cost_s)
        return frame


async def test_paced_async_engine_starts_slow_renders_early_on_a_late_waking_loop(
        avatar: Avatar, speech_16k: np.ndarray) -> None:
    """16 ms renders, a loop that wakes every sleeper 8 ms late: the learnt lead (the server's pacer)
    starts each frame early enough that, once learnt, every frame is drawn and handed out at its due
    time plus only the loop's own lateness. AsyncEngine used to start a frame at its due time: each
    one was handed out the lateness and the render late (24 ms)."""
    clock = LateClock(late_s=0.008)
    engine = AsyncEngine(SlowRenders(avatar, clock, cost_s=0.016), clock=clock)
    await engine.push_audio(speech_16k[: 2 * 16_000], 16_000)
    origin, n_frames = clock.now(), 40  # frame 0 is due at the first request
    handed: list[tuple[Frame, float]] = []

    async def consume() -> None:
        async for frame in engine:
            handed.append((frame, clock.now() - (origin + frame.index / VIDEO_FPS)))
            if len(handed) == n_frames:
                return

    await released(clock, asyncio.create_task(consume()))
    learnt = handed[n_frames // 2 :]
    assert all(frame.rendered for frame, _ in learnt)
    assert max(late_s for _, late_s in learnt) <= clock.late_s + 1e-6
    assert sum(not frame.rendered for frame, _ in handed) <= 3  # while it learns


async def test_a_paced_frame_waiting_for_its_due_time_outlives_a_cancelled_call(avatar: Avatar) -> None:
    """A paced frame is made early (the lead) and waits for its due time; a call cancelled in that
    wait (a consumer's timeout) must leave the frame to the next call, or it is lost and every
    later frame is handed out a frame early."""
    clock = ManualClock()
    engine = AsyncEngine(Engine(avatar), clock=clock)
    origin = clock.now()
    assert (await anext(engine)).index == 0  # due at once
    waiting = asyncio.create_task(anext(engine))
    for release in (True, False):  # frame 1 sleeps until its start, is made, sleeps until due
        while clock.sleepers == 0 and not waiting.done():
            await asyncio.sleep(0.001)
        if release:
            clock.release_next()
    assert not waiting.done(), "frame 1 was not made ahead of its due time"
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    for index in (1, 2):
        assert (await released(clock, asyncio.create_task(anext(engine)))).index == index
        assert clock.now() == pytest.approx(origin + index / VIDEO_FPS)


JUST_IN_TIME_S = 0.005  # how long before its frame is due the TTS delivers the audio that completes it


@pytest.mark.parametrize("pacing", [PacingConfig(), PacingConfig(min_lead_ms=PacingConfig().lead_ms)],
                         ids=["learnt-lead", "longest-lead"])
async def test_a_turn_streamed_just_in_time_is_not_cut_by_an_early_start(
        avatar: Avatar, speech_16k: np.ndarray, pacing: PacingConfig) -> None:
    """A TTS delivers each frame's audio just before that frame is due, after the pacer has started
    it early. The frame must wait for its audio: ending the turn there (what a frame short of audio
    does at its due time) would put silence into the words and push the rest of them a turn later."""
    clock, core = ParkingClock(), Engine(avatar)
    engine = AsyncEngine(core, clock=clock, pacing=pacing)
    origin, first = clock.now(), VIDEO_FPS // 5  # frame 0 is due at the first request; idle before `first`
    speech = speech_16k[: VIDEO_FPS * SAMPLES_PER_VIDEO_FRAME]  # one second
    # The turn opens with a 20 ms chunk before frame `first` starts; then the audio that completes
    # frame first + k (its samples and lookahead) comes JUST_IN_TIME_S before it is due.
    ends = [320] + [core.latency_samples + k * SAMPLES_PER_VIDEO_FRAME for k in range(VIDEO_FPS)]
    times = [origin + (first - 1) / VIDEO_FPS - JUST_IN_TIME_S] + [
        origin + (first + k) / VIDEO_FPS - JUST_IN_TIME_S for k in range(VIDEO_FPS)]
    n_frames = first + 2 * VIDEO_FPS
    handed: list[tuple[Frame, float]] = []

    async def tts() -> None:
        for at, start, end in zip(times, [0, *ends], ends, strict=False):
            await clock.sleep_until(at)
            await engine.push_audio(speech[start:end], 16_000)
        await engine.end_segment()

    async def consume() -> None:
        async for frame in engine:
            handed.append((frame, clock.now()))
            if len(handed) == n_frames:
                return

    await run_parked(clock, asyncio.create_task(consume()), asyncio.create_task(tts()))
    assert [f.index for f, _ in handed] == list(range(n_frames))
    assert all(t == pytest.approx(origin + f.index / VIDEO_FPS) for f, t in handed)  # 25 fps kept
    tape = np.concatenate([f.input_audio for f, _ in handed])
    # The idle frames left their lookahead of silence in the timeline: the turn follows it, on the
    # tape as in what the model heard, with no silence let in
    turn_frame = first + -(-core.lookahead_samples // SAMPLES_PER_VIDEO_FRAME)
    assert next(f.index for f, _ in handed if f.audio.any()) == turn_frame
    start = turn_frame * SAMPLES_PER_VIDEO_FRAME
    np.testing.assert_array_equal(tape[start : start + speech.size], speech)
    assert not tape[:start].any()
    talking = [f for f, _ in handed[first : first + VIDEO_FPS]]
    assert all(f.rendered for f in talking)  # waiting for its audio froze no picture


async def test_a_cancelled_engine_call_holds_the_engine_until_its_thread_is_out() -> None:
    """A Pipecat interruption cancels a push mid-call, a closing session cancels a render: the next
    call (a clear, another session's use) must wait for the thread still inside the engine."""
    calls, inside, go = EngineCalls(), threading.Event(), threading.Event()
    order: list[str] = []

    def held() -> None:
        inside.set()
        go.wait()
        order.append("cancelled call left")

    first = asyncio.create_task(calls(held))
    while not inside.is_set():
        await asyncio.sleep(0.001)
    first.cancel()
    second = asyncio.create_task(calls(lambda: order.append("next call ran")))
    await asyncio.wait({first, second}, timeout=0.1)
    assert not first.done() and not second.done() and order == []
    go.set()
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and order == ["cancelled call left", "next call ran"]


class GatedEngine(Engine):
    """An Engine whose next pop_frame, once `gate()` is called, waits inside its thread for `go`."""

    def __init__(self, avatar: Avatar) -> None:
        super().__init__(avatar)
        self.inside, self.go = threading.Event(), threading.Event()
        self.go.set()

    def gate(self) -> None:
        self.go.clear()

    def pop_frame(self, render: bool = True) -> Frame | None:
        self.inside.set()
        self.go.wait()
        return super().pop_frame(render)


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
async def test_a_consumer_cancelled_while_its_frame_is_made_loses_no_frame(
        avatar: Avatar, paced: bool) -> None:
    """A consumer's timeout cancels `anext` while the engine's thread makes the frame; the thread
    runs on and takes the frame out of the engine. The next `anext` must hand out that frame: it
    used to be dropped, every later frame a number ahead of the one asked for."""
    clock, core = ManualClock(), GatedEngine(avatar)
    engine = AsyncEngine(core, paced=paced, clock=clock)
    await engine.push_audio(np.zeros(16_000, np.float32), 16_000)
    await engine.end_segment()
    core.inside.clear()
    core.gate()
    cancelled = asyncio.create_task(anext(engine))
    while not core.inside.is_set():
        await asyncio.sleep(0.001)
        if clock.sleepers:
            clock.release_next()
    cancelled.cancel()
    core.go.set()
    await asyncio.gather(cancelled, return_exceptions=True)
    got = [(await released(clock, asyncio.create_task(anext(engine)))).index for _ in range(3)]
    assert got == [0, 1, 2]


async def test_two_tasks_iterating_one_paced_engine_share_its_frames_in_order(avatar: Avatar) -> None:
    """An app with a video task and a recorder task on one engine: each frame goes to one of them,
    none is lost or given twice, each at its due time. The second task used to find the first's
    frame made and waiting, and both were handed that one slot: one got None (or an error)."""
    clock = ManualClock()
    engine = AsyncEngine(Engine(avatar), clock=clock)
    await engine.push_audio(np.zeros(16_000, np.float32), 16_000)
    await engine.end_segment()
    origin, handed = clock.now(), list[tuple[int, float]]()

    async def consume() -> None:
        for _ in range(5):
            frame = await anext(engine)
            handed.append((frame.index, clock.now()))

    tasks = [asyncio.create_task(consume()) for _ in range(2)]
    await released(clock, asyncio.ensure_future(asyncio.gather(*tasks)))
    assert sorted(index for index, _ in handed) == list(range(10))
    assert all(t == pytest.approx(origin + index / VIDEO_FPS) for index, t in handed)


class GatedFinish(Engine):
    """An Engine whose finish() waits inside its thread for `go`."""

    def __init__(self, avatar: Avatar) -> None:
        super().__init__(avatar)
        self.inside, self.go = threading.Event(), threading.Event()

    def finish(self) -> None:
        self.inside.set()
        self.go.wait()
        super().finish()


async def test_a_close_cancelled_while_the_engine_finishes_still_ends_unpaced_iteration(
        avatar: Avatar) -> None:
    """A shutdown cancels `close()` while its call is in the engine: the thread runs on and the
    engine finishes. The consumer must still get the last frames and stop; it used to sleep forever,
    waiting to be told of an input that had already come."""
    core = GatedFinish(avatar)
    engine = AsyncEngine(core, paced=False)
    await engine.push_audio(np.zeros(SAMPLES_PER_VIDEO_FRAME * 5 // 2, np.float32), 16_000)
    consumer = asyncio.ensure_future(asyncio.wait_for(collect(engine), HANG_S))
    closing = asyncio.create_task(engine.close())
    while not core.inside.is_set():
        await asyncio.sleep(0.001)
    closing.cancel()
    core.go.set()
    await asyncio.gather(closing, return_exceptions=True)
    assert [frame.index for frame in await consumer] == [0, 1, 2]  # the half frame padded, then the end


HANG_S = 10.0  # what a test waits before calling an iteration hung (it ends in milliseconds)


async def collect(engine: AsyncEngine) -> list[Frame]:
    return [frame async for frame in engine]


async def test_a_paced_engine_without_lookahead_idles_and_then_speaks(avatar: Avatar) -> None:
    """A model with no lookahead (`EngineConfig(motion="baseline", lookahead_ms=0)`): ending a turn
    at a frame boundary pads nothing, and the idle loop that ends turns until a frame is ready spun
    in the engine's thread forever, before frame 0."""
    clock = ManualClock()
    engine = AsyncEngine(Engine(avatar, EngineConfig(motion="baseline", lookahead_ms=0)), clock=clock)
    idle = [await released(clock, asyncio.create_task(anext(engine))) for _ in range(3)]
    await engine.push_audio(np.full(24_000 // VIDEO_FPS * 2, 0.25, np.float32), 24_000)  # two frames
    await engine.end_segment()
    spoken = [await released(clock, asyncio.create_task(anext(engine))) for _ in range(3)]
    assert [f.index for f in idle + spoken] == list(range(6))
    assert [f.input_audio.any() for f in spoken] == [True, True, False]
    assert spoken[0].input_rate == 24_000
