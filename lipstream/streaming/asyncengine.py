"""AsyncEngine: an `Engine` for asyncio programs (voice agents, frameworks), rendering off the loop.

    engine = AsyncEngine(Engine(avatar))
    await engine.push_audio(tts_chunk, sample_rate=24_000)   # as the TTS streams it
    await engine.end_segment()                               # the turn is over
    async for frame in engine:                               # 25 fps in real time, forever
        show(frame.image); play(frame.input_audio, frame.input_rate)

Paced (the default), frame n is handed out at origin + n / 25 s on the clock, origin being the
first request: when no speech is waiting the engine makes idle frames (the mouth rests, the eyes
blink), so a video track never stalls. Frames follow a server session's own rule (a `FramePacer`,
tuned by `pacing`): a render starts just in time, early by what renders have been taking and how
late the loop wakes, and the finished frame waits for its due time; a render projected to finish
after it (a slow machine, a consumer that came late) is skipped, the picture repeating while the
controls and audio go on.

Starting early must not cut a turn: while a turn is open (speech pushed, its `end_segment` not yet
called) a frame whose audio is not all in waits for it, until its due time at most, and is then
rendered unless more than a frame late (a TTS streaming just in time paces the picture, it does not
freeze it). Only a turn whose audio is still missing at the due time is ended there, so time goes on.
Unpaced, frames come as fast as their audio allows and iteration ends after `close()` once every
pushed sample has its frame.

The engine's calls run one at a time in an executor thread (the Engine takes one producer and one
consumer, not concurrently): the event loop never renders. `EngineCalls` is that rule, and the
server's `FrameProducer` runs its engine through it too. Hence one AsyncEngine per Engine: a second
is refused (`ConfigError`) until the first is closed (or dropped); stop iterating the closed one
before the Engine goes on in the next.
"""

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import TypeVar

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.engine import Engine, Frame, Picture
from lipstream.errors import ConfigError
from lipstream.streaming.clock import FRAME_S, Clock, MediaClock, MonotonicClock
from lipstream.streaming.pacing import FramePacer, PacingConfig

T = TypeVar("T")

IDLE_INPUT = np.zeros(SAMPLES_PER_VIDEO_FRAME, np.float32)  # (640,) one frame of silence at 16 kHz


class EngineCalls:
    """Calls into one engine, one at a time, each in an executor thread (None: the loop's default)."""

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor
        self._lock = asyncio.Lock()

    async def __call__(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            done = asyncio.get_running_loop().run_in_executor(self._executor, fn)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                # The thread runs on: keep the lock until it is out of the engine, or the next call
                # (a Pipecat interruption cancels a push, then clears; a closing session drops the
                # engine) would run beside it.
                await asyncio.wait({done})
                raise


class EngineClaims:
    """Which AsyncEngine holds each Engine. Weak both ways: a dropped AsyncEngine lets its Engine go,
    and the claims keep neither alive."""

    def __init__(self) -> None:
        self._holders = weakref.WeakKeyDictionary[Engine, "weakref.ref[AsyncEngine]"]()
        self._lock = threading.Lock()  # released from the executor thread that runs close()

    def claim(self, engine: Engine, holder: "AsyncEngine") -> None:
        with self._lock:
            held = self._holders.get(engine)
            if held is not None and held() is not None:
                raise ConfigError("this Engine is already in an AsyncEngine: close() that one first, "
                                  "or give this one its own Engine(avatar)")
            self._holders[engine] = weakref.ref(holder)

    def release(self, engine: Engine, holder: "AsyncEngine") -> None:
        with self._lock:
            held = self._holders.get(engine)
            if held is not None and held() is holder:
                del self._holders[engine]


CLAIMS = EngineClaims()


class AsyncEngine:
    def __init__(self, engine: Engine, *, paced: bool = True, clock: Clock | None = None,
                 executor: Executor | None = None, pacing: PacingConfig | None = None) -> None:
        CLAIMS.claim(engine, self)  # first: a refused AsyncEngine must not look like a holder
        self.engine, self.paced = engine, paced
        self.clock = clock or MonotonicClock()
        self._call = EngineCalls(executor)
        self._arrived = asyncio.Event()  # set when input arrives or ends (waiting frames wake on it)
        self._closed = False
        # Speech pushed and its turn not ended: a frame short of audio waits for it. Changed only
        # inside engine calls, so it always agrees with the engine's state.
        self._turn_open = False
        self._timeline = MediaClock(self.clock)  # frame 0 is due at the first request
        self._pacer = FramePacer(self._timeline, pacing)
        self._picture: Picture | None = None  # the last frame's, to tell a new drawing from a repeat
        self._made: Frame | None = None  # a paced frame made but not handed out yet
        self._next = 0  # frames handed out
        self._handing = asyncio.Lock()  # consumers (an app's several tasks) take frames in turn

    async def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Add input audio: int or float PCM, mono or (samples, channels), at 8 to 768 kHz."""
        await self._input(lambda: self._push(pcm, sample_rate))

    async def end_segment(self) -> None:
        """The turn is over: its last frames can be made now."""
        await self._input(lambda: self._end_turn(self.engine.end_segment))

    async def clear(self) -> None:
        """Barge-in: drop the speech not yet turned into frames; the mouth eases to rest."""
        await self._input(lambda: self._end_turn(self.engine.clear))  # a waiting frame goes on, idle

    async def close(self) -> None:
        """No more input. Unpaced iteration ends after the frames of what was pushed."""
        await self._input(self._finish)

    async def _input(self, change: Callable[[], None]) -> None:
        """Change the engine's input, then wake the frames waiting for it. They are woken even when
        the caller is cancelled meanwhile: the engine's thread runs on and the change is made, and
        a consumer left asleep would wait for input that already came (or, after a close, forever)."""
        try:
            await self._call(change)
        finally:
            self._arrived.set()  # waking for nothing is harmless: a waiting frame looks again

    def _finish(self) -> None:
        self._end_turn(self.engine.finish)
        self._closed = True  # in the engine call, with the finish: a cancelled close() still closes
        CLAIMS.release(self.engine, self)

    def _push(self, pcm: np.ndarray, sample_rate: int) -> None:
        self.engine.push_audio(pcm, sample_rate)
        self._turn_open = True  # after the push: audio it refused opens nothing

    def _end_turn(self, end: Callable[[], None]) -> None:
        end()
        self._turn_open = False

    def __aiter__(self) -> "AsyncEngine":
        return self

    async def __anext__(self) -> Frame:
        async with self._handing:
            frame = await (self._next_paced() if self.paced else self._next_unpaced())
            self._next += 1
            return frame

    async def _next_paced(self) -> Frame:
        self._timeline.start()
        if self._made is None:
            await self._make(self._next)
        # Made early by the lead, handed out when due; a call cancelled while it waits leaves the
        # frame to the next call, so no frame is lost and later ones keep their due times.
        await self.clock.sleep_until(self._timeline.frame_time(self._next))
        return self._hand_out()

    def _keep(self, frame: Frame | None) -> Frame | None:
        """Hold a frame the engine just made until it is handed out. Done inside the engine call:
        a consumer cancelled while the call runs (its thread runs on) finds the frame next time,
        instead of the engine having moved past a frame nobody got."""
        self._made = frame
        return frame

    def _hand_out(self) -> Frame:
        frame, self._made = self._made, None
        assert frame is not None
        return frame

    async def _make(self, index: int) -> Frame:
        """Frame `index`, started just in time, or as soon as its audio is in (by its due time)."""
        await self._pacer.wait_to_start(index)
        held = False  # whether it waited for its audio
        while (frame := await self._try_make(index, held)) is None:
            held = True
            await self._timeline.wait_event(self._arrived, self._timeline.frame_time(index))
        return frame

    async def _try_make(self, index: int, held: bool) -> Frame | None:
        """Frame `index` now, rendered or skipped; None while its audio is coming and it can wait."""
        self._arrived.clear()  # before looking: audio that comes while we look wakes us
        render, may_wait = self._should_render(index, held), not self._is_due(index)
        started = self.clock.now()
        frame = await self._call(partial(self._pop, render, may_wait))
        if frame is not None:
            self._pacer.made(render, self.clock.now() - started, drawn=frame.picture is not self._picture)
            self._picture = frame.picture
        return frame

    def _is_due(self, index: int) -> bool:
        return self.clock.now() >= self._timeline.frame_time(index)

    def _should_render(self, index: int, held: bool) -> bool:
        """The pacer's rule; a frame that waited for its audio is rendered unless more than a frame
        late: its audio, not the CPU, made it late, and skipping would freeze a talking mouth."""
        late_s = self.clock.now() - self._timeline.frame_time(index)
        return self._pacer.should_render(index) or (held and late_s <= FRAME_S)

    def _pop(self, render: bool, may_wait: bool) -> Frame | None:
        """The next frame; None when its turn's audio is still coming and it `may_wait` for it, else
        idle input (silence) when no speech is waiting, so time goes on."""
        if self.engine.ready() == 0 and self._turn_open and may_wait:
            return None
        if self.engine.ready() == 0:
            self._idle()
        frame = self.engine.pop_frame(render=render)
        assert frame is not None
        return self._keep(frame)

    def _idle(self) -> None:
        """Make the next frame ready without speech: end the stalled turn (its padding gives frames),
        else pad a frame of silence (a model without lookahead pads nothing at a frame boundary)."""
        self._end_turn(self.engine.end_segment)
        if self.engine.ready() == 0:
            self.engine.push_audio(IDLE_INPUT, SAMPLE_RATE)
            self.engine.end_segment()  # a turn of its own: the next push may come at any rate

    async def _next_unpaced(self) -> Frame:
        while self._made is None:
            self._arrived.clear()  # before looking: input that comes while we look wakes us
            if await self._call(lambda: self._keep(self.engine.pop_frame())) is not None:
                break
            if self._closed:
                raise StopAsyncIteration
            await self._arrived.wait()
        return self._hand_out()
