"""Helpers for tests of pacing: a manual clock that wakes its sleepers late, one that counts who
waits on it (and a loop that releases it only when every task waits), a stand-in engine whose
renders take time on its own timer, and one loop that runs a session's FrameProducer on a manual
clock."""

import asyncio
from collections.abc import Callable

from lipstream.streaming.clock import ManualClock, MediaClock
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.worker import FrameEngine, FrameProducer, FrameRing, RenderPool
from tests.test_clock import StampedFrame, StampingEngine


class LateClock(ManualClock):
    """A manual clock whose sleepers wake `late_s` after their deadline (a busy event loop), and
    every `stall_every`-th one `stall_s` late instead (a stall)."""

    def __init__(self, late_s: float, stall_s: float = 0.0, stall_every: int = 0) -> None:
        super().__init__()
        self.late_s, self.stall_s, self.stall_every = late_s, stall_s, stall_every
        self.wakes = 0

    def release_next(self) -> None:
        deadline = self._sleepers[0][0]
        super().release_next()
        self.wakes += 1
        stalled = self.stall_every and self.wakes % self.stall_every == 0
        self._now = max(self._now, deadline + (self.stall_s if stalled else self.late_s))

    def spend(self, seconds: float) -> None:
        """Time passes while nobody sleeps (a render in a worker thread, on a slow machine)."""
        self._now += seconds


class ParkingClock(ManualClock):
    """A manual clock that counts the tasks waiting on it for a moment still to come (a wait it
    wakes, or one given up, no longer counts): a test releases it only when every task waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.now():
            return await super().sleep_until(deadline)
        self.waiting += 1
        try:
            await super().sleep_until(deadline)
        finally:
            self.waiting -= 1

    def overdue(self) -> bool:
        """Whether a sleeper's moment has already come (perhaps a wait given up: releasing it is
        harmless), so that a test stopping at a moment must release it still."""
        return bool(self._sleepers) and self._sleepers[0][0] <= self.now()

    async def step(self) -> None:
        """Release the earliest sleeper and let it run on: until then it still counts as waiting."""
        self.release_next()
        await asyncio.sleep(0)


async def run_parked(clock: ParkingClock, *tasks: asyncio.Task[None]) -> None:
    """Release `clock`'s sleepers one by one, each once every unfinished task waits on it."""
    while not all(task.done() for task in tasks):
        await asyncio.sleep(0.001)
        if clock.sleepers and clock.waiting == sum(not task.done() for task in tasks):
            await clock.step()
    await asyncio.gather(*tasks)


class SlowEngine(StampingEngine):
    """Renders take `cost_s` of its own time (read through `now`), plus `jitter_s` every 4th."""

    def __init__(self, cost_s: float, jitter_s: float = 0.0) -> None:
        super().__init__()
        self.cost_s, self.jitter_s, self.elapsed_s = cost_s, jitter_s, 0.0

    def now(self) -> float:
        return self.elapsed_s

    def pop_frame(self, render: bool = True) -> StampedFrame | None:
        frame = super().pop_frame(render)
        if render and frame is not None:
            self.elapsed_s += self.cost_s + (self.jitter_s if frame.index % 4 == 0 else 0.0)
        return frame


def made(frames: int) -> Callable[[FrameProducer], bool]:
    """`drive`'s stop condition: `frames` frames made, rendered or skipped."""
    return lambda producer: sum(producer.counts.values()) >= frames


async def drive(engine: FrameEngine, until: Callable[[FrameProducer], bool],
                clock: ManualClock | None = None,
                timer: Callable[[], float] | None = None) -> FrameProducer:
    """Run a producer of `engine` on a manual clock until `until(producer)`, then stop it.

    Its sleepers are released one by one, each once the producer sleeps (its renders run in a
    worker thread), so the run is deterministic; `timer` times its renders (a fake engine's own).
    """
    clock = clock or ManualClock()
    media = MediaClock(clock)
    pool = RenderPool(1)
    producer = FrameProducer(engine, AudioInbox(), media, pool, FrameRing(media), ServerMetrics(),
                             timer=timer)
    media.start()
    task = asyncio.create_task(producer.run())
    try:
        while not until(producer):
            while clock.sleepers == 0:
                await asyncio.sleep(0.001)
            clock.release_next()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pool.shutdown()
    return producer
