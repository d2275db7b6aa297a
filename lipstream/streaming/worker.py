"""The bridge between the event loop and the engine: frames are made in worker threads.

One `RenderPool` per server (one thread per core; numpy and OpenCV release the GIL), one
`FrameProducer` per session. The producer feeds its engine one frame of inbound audio per tick,
started just in time and rendered or skipped by a `FramePacer` (`pacing.py`, the rule a paced
`AsyncEngine` follows too); a skip is counted in the metrics, and the session stays live and in
sync. Its engine calls go through `EngineCalls`, the AsyncEngine's own rule: one at a time, and a
cancelled one (a closing session) is waited out before the engine can be dropped or called again.
"""

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.asyncengine import EngineCalls
from lipstream.streaming.clock import FRAME_S, MediaClock
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.pacing import FramePacer, PacingConfig

T = TypeVar("T")


class EngineFrame(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def image(self) -> np.ndarray: ...  # (S, S, 3) uint8 RGB (converted on first use off the CPU)
    @property
    def yuv(self) -> np.ndarray: ...  # (S * 3 // 2, S) uint8 I420, read-only; the same array
    # for every frame that repeats a picture (a skipped render, an idle face)
    @property
    def audio(self) -> np.ndarray: ...  # (640,) float32 at 16 kHz, made with this image
    @property
    def rendered(self) -> bool: ...
    @property
    def controls(self) -> np.ndarray: ...  # (N_CONTROLS,) the controls it was rendered with
    @property
    def visemes(self) -> np.ndarray | None: ...  # (N_VISEMES,) probabilities, if the model has them


class FrameEngine(Protocol):
    """What a session needs of `lipstream.engine.Engine`."""

    @property
    def latency_samples(self) -> int: ...

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def pop_frame(self, render: bool = True) -> EngineFrame | None: ...


class Timed(Generic[T]):
    """A call that notes when a worker starts it: how long it waited for a worker."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn, self.submitted = fn, time.perf_counter()
        self.started: float | None = None

    def __call__(self) -> T:
        self.started = time.perf_counter()
        return self._fn()

    @property
    def waited_s(self) -> float:
        assert self.started is not None, "not run yet"
        return self.started - self.submitted


class RenderPool:
    """A bounded thread pool shared by every session of a server.

    The pool is the parallelism: one session per worker at a time. OpenBLAS would add threads of
    its own to each small matrix product, and they spin-wait between calls: measured here, one
    session cost 105% of a core with them and 25% without. So BLAS is held to one thread.
    """

    def __init__(self, workers: int | None = None) -> None:
        threadpool_limits(1, user_api="blas")  # process-wide, and meant to be
        self.workers = workers or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="lipstream-render")

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    async def run(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run fn in a worker; returns its result and the seconds it waited for a worker."""
        timed = Timed(fn)
        result = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        return result, timed.waited_s

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class ReadyFrame:
    """A frame as the tracks send it."""

    index: int
    audio: np.ndarray  # (640,) float32 at 16 kHz: the engine's Frame.audio
    # (S * 3 // 2, S) uint8 I420, the encoders' own format: the engine's Frame.yuv, made once in
    # a worker instead of once per sender (session and viewers) on the encoding threads. Read-only.
    yuv: np.ndarray
    controls: np.ndarray  # (N_CONTROLS,) the engine's Frame.controls (the control stream sends them)
    visemes: np.ndarray | None  # (N_VISEMES,) or None
    # False when the render was skipped to keep time: the picture is the last one drawn and does
    # not show these controls (a client drawing its own face wants them all the same).
    shown: bool = True


class FrameRing:
    """The newest frames of a session, by index, bounded in milliseconds of video.

    The session's tracks and every viewer's tracks read from it; when full, the oldest frame goes.
    """

    def __init__(self, clock: MediaClock, capacity_ms: int = 240) -> None:
        self.clock = clock
        self.capacity = max(int(capacity_ms / 1000 / FRAME_S), 2)
        self._frames: dict[int, ReadyFrame] = {}
        self._arrived = asyncio.Event()  # set and replaced on every put
        self.newest = -1

    def put(self, frame: ReadyFrame) -> None:
        self._frames[frame.index] = frame
        self._arrived.set()
        self._arrived = asyncio.Event()
        self.newest = max(self.newest, frame.index)
        for index in [i for i in self._frames if i <= self.newest - self.capacity]:
            del self._frames[index]

    def get(self, index: int) -> ReadyFrame | None:
        return self._frames.get(index)

    async def wait_for(self, index: int, timeout_s: float) -> ReadyFrame | None:
        """Frame `index`, waiting up to `timeout_s` if it is still being made."""
        deadline = self.clock.now() + timeout_s
        while (frame := self._frames.get(index)) is None and self.newest < index:
            if not await self.clock.wait_event(self._arrived, deadline):
                return None
        return frame


# The name sessions' configs (`SessionConfig.producer`) have always used for the pacing's.
ProducerConfig = PacingConfig


class FrameProducer:
    """Feeds the engine one frame of inbound audio per tick and publishes its frames, paced by a
    `FramePacer` (the paced AsyncEngine's own)."""

    def __init__(self, engine: FrameEngine, inbox: AudioInbox, clock: MediaClock, pool: RenderPool,
                 ring: FrameRing, metrics: ServerMetrics, config: PacingConfig | None = None,
                 timer: Callable[[], float] | None = None) -> None:
        self.engine: FrameEngine | None = engine
        self.inbox, self.clock = inbox, clock
        self._call = EngineCalls(pool.executor)  # one engine call at a time, in the server's pool
        self.ring, self.metrics = ring, metrics
        self.pacer = FramePacer(clock, config)
        self.timer = timer or clock.now  # measures renders (tests may give a fake engine's own)
        self._yuv: np.ndarray | None = None  # the picture last sent, I420

    @property
    def counts(self) -> dict[str, int]:
        """Frames made so far, "rendered" and "skipped"."""
        return self.pacer.counts

    def release(self) -> None:
        """Drop the engine (after the run task has been cancelled and awaited)."""
        self.engine = None

    async def run(self) -> None:
        engine = self.engine
        assert engine is not None, "producer already released"
        await self.clock.wait_started()
        # The engine needs its lookahead before frame 0: prime it with that much silence, so
        # from then on each frame of audio taken makes exactly one frame.
        primer = np.zeros(engine.latency_samples - SAMPLES_PER_VIDEO_FRAME, np.float32)
        await self._call(lambda: engine.push_audio(primer, SAMPLE_RATE))
        index = 0
        while True:
            lead_s = await self.pacer.wait_to_start(index)
            self.metrics.producer_lead_seconds.observe(lead_s)
            await self._make(engine, index)
            index += 1

    async def _make(self, engine: FrameEngine, index: int) -> None:
        audio = self.inbox.take()
        self.metrics.input_depth_seconds.observe(self.inbox.depth_ms / 1000)
        render = self.pacer.should_render(index)
        start, last_yuv = self.timer(), self._yuv
        step = Timed(lambda: self._step(engine, audio, render))
        frame = await self._call(step)
        elapsed_s, waited_s = self.timer() - start, step.waited_s
        if frame is None:  # cannot happen while one frame of audio goes in per tick
            return
        self.ring.put(frame)
        self._account(render, elapsed_s, waited_s, self.clock.frame_time(index))
        # drawn, not an idle face's repeat: what renders cost
        self.pacer.made(render, elapsed_s, drawn=frame.yuv is not last_yuv)

    def _step(self, engine: FrameEngine, audio: np.ndarray, render: bool) -> ReadyFrame | None:
        """One tick, in a worker thread: a frame of audio in, the frame it completes out."""
        engine.push_audio(audio, SAMPLE_RATE)
        frame = engine.pop_frame(render=render)
        if frame is None:
            return None
        # Read here, in the worker: on the CPU the engine converts its RGB on first use (once per
        # picture: a skipped render or an idle face repeats the very same I420 array).
        self._yuv = frame.yuv
        return ReadyFrame(frame.index, frame.audio, self._yuv, frame.controls, frame.visemes,
                          shown=frame.rendered)

    def _account(self, rendered: bool, elapsed_s: float, waited_s: float, due: float) -> None:
        result = "rendered" if rendered else "skipped"
        self.metrics.frames.labels(result).inc()
        self.metrics.stage_seconds.labels("queue").observe(waited_s)
        self.metrics.stage_seconds.labels("engine").observe(elapsed_s - waited_s)
        self.metrics.stage_seconds.labels("ready_margin").observe(max(due - self.clock.now(), 0.0))
