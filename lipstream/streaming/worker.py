"""The bridge between the event loop and the engine: frames are made in worker threads.

One `RenderPool` per server (one thread per core; numpy and OpenCV release the GIL), one
`FrameProducer` per session. The producer starts frame n just in time: as long before it is due
as renders have been taking plus how late the event loop has been waking it (each smoothed, plus
a few deviations and a margin), so the audio it takes has waited as little as it can. If the
projected finish would miss the due time (a busy pool, a slow machine) it asks the engine for the
frame without rendering it: the image repeats, the mouth controls and the audio advance, so the
session stays live and in sync, and the skip is counted. Skipping is also the pressure valve of a
starved machine: a render finishing late costs the CPU and still misses its frame. Its engine
calls go through `EngineCalls`, the AsyncEngine's own rule: one at a time, and a cancelled one
(a closing session) is waited out before the engine can be dropped or called again.
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


@dataclass(frozen=True)
class ProducerConfig:
    lead_ms: int = 80  # the most a frame is started before it is due (and the lead before any render)
    # Frame 0 is due this long after the peer connects: enough for the primer and one render of a
    # warm engine (the server renders one at start-up), not a full lead_ms of waiting.
    start_lead_ms: int = 30
    min_lead_ms: int = 10  # the least: a render never takes less than a scheduling hiccup
    margin_ms: int = 5  # added to the estimate for the event loop's wake-up latency
    deviations: float = 3.0  # how many mean deviations of render time the lead covers
    ema_weight: float = 0.2  # how fast the render-time estimate follows the last renders


class FrameProducer:
    """Feeds the engine one frame of inbound audio per tick and publishes its frames."""

    def __init__(self, engine: FrameEngine, inbox: AudioInbox, clock: MediaClock, pool: RenderPool,
                 ring: FrameRing, metrics: ServerMetrics, config: ProducerConfig | None = None,
                 timer: Callable[[], float] | None = None) -> None:
        self.engine: FrameEngine | None = engine
        self.inbox, self.clock = inbox, clock
        self._call = EngineCalls(pool.executor)  # one engine call at a time, in the server's pool
        self.ring, self.metrics = ring, metrics
        self.config = config or ProducerConfig()
        self.timer = timer or clock.now  # measures renders (tests may give a fake engine's own)
        self.render_estimate_s = 0.0  # submit-to-finish time of a rendered frame, smoothed
        self.render_deviation_s = 0.0  # mean absolute deviation from that estimate, smoothed
        self._learnt = False  # whether a drawn frame has been timed yet
        # How much later than planned the event loop woke the producer to start a frame, smoothed:
        # a busy loop (other sessions' packets, the GIL held by render and encoder threads) wakes
        # it several ms late, and a lead that ignores that leaves renders no time.
        self.wake_lateness_s = 0.0
        self.counts = {"rendered": 0, "skipped": 0}
        self._yuv: np.ndarray | None = None  # the picture last sent, I420

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
            due = self.clock.frame_time(index)
            lead_s = self.lead_s()
            await self._sleep_until(due - lead_s)
            self.metrics.producer_lead_seconds.observe(lead_s)
            await self._make(engine, index, due)
            index += 1

    def lead_s(self) -> float:
        """How long before its due time the next frame starts: the loop's wake-up lateness + render
        time + jitter, clamped."""
        if self.counts["rendered"] == 0:
            return self.config.lead_ms / 1000
        c = self.config
        wanted_s = (self.wake_lateness_s + self.render_estimate_s
                    + c.deviations * self.render_deviation_s + c.margin_ms / 1000)
        return min(max(wanted_s, c.min_lead_ms / 1000), c.lead_ms / 1000)

    async def _sleep_until(self, start: float) -> None:
        """Sleep until `start`, learning how late the loop wakes (not counted when the last frame
        itself ran past `start`: that is the render's lateness, which its own estimate covers)."""
        behind = start <= self.clock.now()
        await self.clock.sleep_until(start)
        if behind:
            return
        w = self.config.ema_weight
        self.wake_lateness_s = (1 - w) * self.wake_lateness_s + w * (self.clock.now() - start)

    async def _make(self, engine: FrameEngine, index: int, due: float) -> None:
        audio = self.inbox.take()
        self.metrics.input_depth_seconds.observe(self.inbox.depth_ms / 1000)
        render = self.clock.now() + self.render_estimate_s <= due
        start, last_yuv = self.timer(), self._yuv
        step = Timed(lambda: self._step(engine, audio, render))
        frame = await self._call(step)
        elapsed_s, waited_s = self.timer() - start, step.waited_s
        if frame is None:  # cannot happen while one frame of audio goes in per tick
            return
        self.ring.put(frame)
        self._account(render, elapsed_s, waited_s, due)
        if not render:
            self._decay()
        elif frame.yuv is not last_yuv:  # drawn, not an idle face's repeat: what renders cost
            self._learn(elapsed_s)

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
        self.counts[result] += 1
        self.metrics.frames.labels(result).inc()
        self.metrics.stage_seconds.labels("queue").observe(waited_s)
        self.metrics.stage_seconds.labels("engine").observe(elapsed_s - waited_s)
        self.metrics.stage_seconds.labels("ready_margin").observe(max(due - self.clock.now(), 0.0))

    def _learn(self, elapsed_s: float) -> None:
        """A newly drawn frame took `elapsed_s` from submission: follow it and its jitter."""
        if not self._learnt:  # the first render is the best guess yet
            self.render_estimate_s, self._learnt = elapsed_s, True
            return
        w = self.config.ema_weight
        miss_s = abs(elapsed_s - self.render_estimate_s)
        self.render_deviation_s = (1 - w) * self.render_deviation_s + w * miss_s
        self.render_estimate_s = (1 - w) * self.render_estimate_s + w * elapsed_s

    def _decay(self) -> None:
        """After a skip: decay both, so a session that fell behind tries rendering again once it can."""
        self.render_estimate_s *= 1 - self.config.ema_weight
        self.render_deviation_s *= 1 - self.config.ema_weight

