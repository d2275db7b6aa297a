"""The media clock: one per session, audio is the master, video and audio share one origin.

Frame n leaves at `origin + n / VIDEO_FPS`, audio chunk k at `origin + k * chunk_s`: both
tracks derive their deadlines from the same origin by multiplication, never by adding up
sleeps, so a session that runs for hours has the same sync as one that runs for seconds.
Time comes from a `Clock` so tests can drive minutes of media time in milliseconds.
"""

import asyncio
import heapq
import time
from typing import Protocol

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS, exact_div

FRAME_S = 1.0 / VIDEO_FPS  # 40 ms
AUDIO_CHUNK_MS = 20  # what WebRTC endpoints send per packet
AUDIO_CHUNK_SAMPLES = exact_div(SAMPLE_RATE * AUDIO_CHUNK_MS, 1000)  # 320 at 16 kHz
CHUNKS_PER_FRAME = exact_div(SAMPLES_PER_VIDEO_FRAME, AUDIO_CHUNK_SAMPLES)  # 2


class Clock(Protocol):
    """Monotonic seconds and a way to wait for a moment on that scale."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """The real clock: time.monotonic(), which neither jumps nor slews with NTP."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock for tests: time stands still until the test releases the earliest sleeper.

    `release_next()` jumps to the earliest deadline anyone sleeps until and wakes them, so a test
    that releases only when all its tasks sleep runs them in deadline order, deterministically,
    through many minutes of media time in a fraction of that.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0  # ties wake in the order they went to sleep

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (deadline, self._seq, future))
        await future

    def release_next(self) -> None:
        deadline, _, future = heapq.heappop(self._sleepers)
        self._now = max(self._now, deadline)
        if not future.done():
            future.set_result(None)


class MediaClock:
    """One session's timeline: the origin is set once, when media starts to flow."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._origin: float | None = None
        self._started = asyncio.Event()

    @property
    def started(self) -> bool:
        return self._origin is not None

    def start(self, lead_s: float = 0.0) -> None:
        """Fix the origin `lead_s` from now (idempotent): frame 0 is due then."""
        if self._origin is None:
            self._origin = self.clock.now() + lead_s
            self._started.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    @property
    def origin(self) -> float:
        assert self._origin is not None, "media clock not started"
        return self._origin

    def frame_time(self, index: int) -> float:
        """When video frame `index` (and the first audio chunk made with it) is due."""
        return self.origin + index * FRAME_S

    def chunk_time(self, chunk: int) -> float:
        """When audio chunk `chunk` (AUDIO_CHUNK_MS long) is due."""
        return self.origin + chunk * AUDIO_CHUNK_MS / 1000.0

    def frame_index_at(self, t: float) -> int:
        """The frame due at or just before time t (0 before the origin)."""
        return max(int((t - self.origin) // FRAME_S), 0)

    def now(self) -> float:
        return self.clock.now()

    async def sleep_until(self, deadline: float) -> None:
        await self.clock.sleep_until(deadline)

    async def wait_event(self, event: asyncio.Event, deadline: float) -> bool:
        """Wait until `event` is set or `deadline` passes on this clock -> whether it was set."""
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
        return event.is_set()
