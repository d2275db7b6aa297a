"""AsyncEngine: an `Engine` for asyncio programs (voice agents, frameworks), rendering off the loop.

    engine = AsyncEngine(Engine(avatar))
    await engine.push_audio(tts_chunk, sample_rate=24_000)   # as the TTS streams it
    await engine.end_segment()                               # the turn is over
    async for frame in engine:                               # 25 fps in real time, forever
        show(frame.image); play(frame.input_audio, frame.input_rate)

Paced (the default), frame n is handed out at origin + n / 25 s on the clock, origin being the
first request: when no speech is waiting the engine makes idle frames (the mouth rests, the eyes
blink), so a video track never stalls; a consumer that falls behind gets frames with the render
skipped until it catches up. Unpaced, frames come as fast as their audio allows and iteration ends
after `close()` once every pushed sample has its frame.

Given `pacing=PacingConfig()`, paced frames follow a server session's own rule (a `FramePacer`):
a render starts just in time, early by what renders have been taking and how late the loop wakes,
and the finished frame waits for its due time; a render projected to finish after it (a slow
machine, a consumer that came late) is skipped, the picture repeating while the controls and audio
go on. Its audio must then be in by its start, `lead` before its due time: a frame whose audio is
not all in by then ends the turn there (`end_segment`), as it does at the due time without
`pacing`, when a frame is made at its due time and skipped only when more than a frame late.

The engine's calls run one at a time in an executor thread (the Engine takes one producer and one
consumer, not concurrently): the event loop never renders. `EngineCalls` is that rule, and the
server's `FrameProducer` runs its engine through it too.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np

from lipstream.engine.engine import Engine, Frame, Picture
from lipstream.streaming.clock import FRAME_S, Clock, MediaClock, MonotonicClock
from lipstream.streaming.pacing import FramePacer, PacingConfig

T = TypeVar("T")


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


class AsyncEngine:
    def __init__(self, engine: Engine, *, paced: bool = True, clock: Clock | None = None,
                 executor: Executor | None = None, pacing: PacingConfig | None = None) -> None:
        self.engine, self.paced = engine, paced
        self.clock = clock or MonotonicClock()
        self._call = EngineCalls(executor)
        self._arrived = asyncio.Event()  # set when input arrives or ends (unpaced waits on it)
        self._closed = False
        self._timeline = MediaClock(self.clock)  # frame 0 is due at the first request
        self._pacer = None if pacing is None else FramePacer(self._timeline, pacing)
        self._picture: Picture | None = None  # the last frame's, to tell a new drawing from a repeat
        self._made: Frame | None = None  # a paced frame made but not handed out yet
        self._next = 0  # frames handed out

    async def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Add input audio: int or float PCM, mono or (samples, channels), any rate."""
        await self._call(lambda: self.engine.push_audio(pcm, sample_rate))
        self._arrived.set()

    async def end_segment(self) -> None:
        """The turn is over: its last frames can be made now."""
        await self._call(self.engine.end_segment)
        self._arrived.set()

    async def clear(self) -> None:
        """Barge-in: drop the speech not yet turned into frames; the mouth eases to rest."""
        await self._call(self.engine.clear)

    async def close(self) -> None:
        """No more input. Unpaced iteration ends after the frames of what was pushed."""
        await self._call(self.engine.finish)
        self._closed = True
        self._arrived.set()

    def __aiter__(self) -> "AsyncEngine":
        return self

    async def __anext__(self) -> Frame:
        frame = await (self._next_paced() if self.paced else self._next_unpaced())
        self._next += 1
        return frame

    async def _next_paced(self) -> Frame:
        self._timeline.start()
        if self._made is None:
            self._made = await (self._make_at_due(self._next) if self._pacer is None
                                else self._make_early(self._pacer, self._next))
        # Made early by the lead, handed out when due; a call cancelled while it waits leaves the
        # frame to the next call, so no frame is lost and later ones keep their due times.
        await self.clock.sleep_until(self._timeline.frame_time(self._next))
        frame, self._made = self._made, None
        return frame

    async def _make_at_due(self, index: int) -> Frame:
        """Frame `index` made at its due time, skipped only when more than a frame late."""
        due = self._timeline.frame_time(index)
        await self.clock.sleep_until(due)
        late = self.clock.now() - due > FRAME_S  # a slow consumer: keep time, skip the picture
        return await self._call(lambda: self._pop_or_idle(render=not late))

    async def _make_early(self, pacer: FramePacer, index: int) -> Frame:
        """Frame `index`, started just in time and rendered or skipped by the pacer's rule."""
        await pacer.wait_to_start(index)
        render = pacer.should_render(index)
        started = self.clock.now()
        frame = await self._call(lambda: self._pop_or_idle(render))
        pacer.made(render, self.clock.now() - started, drawn=frame.picture is not self._picture)
        self._picture = frame.picture
        return frame

    def _pop_or_idle(self, render: bool) -> Frame:
        """The next frame; idle input (silence) when no speech is waiting, so time goes on."""
        while self.engine.ready() == 0:
            self.engine.end_segment()  # flushes a stalled turn, else adds a frame of silence
        frame = self.engine.pop_frame(render=render)
        assert frame is not None
        return frame

    async def _next_unpaced(self) -> Frame:
        while True:
            self._arrived.clear()  # before looking: input that comes while we look wakes us
            frame = await self._call(self.engine.pop_frame)
            if frame is not None:
                return frame
            if self._closed:
                raise StopAsyncIteration
            await self._arrived.wait()
