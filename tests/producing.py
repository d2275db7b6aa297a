"""Helpers for tests of a session's FrameProducer: a stand-in engine whose renders take time on
its own timer, and one loop that runs a producer on a manual clock."""

import asyncio
from collections.abc import Callable

from lipstream.streaming.clock import ManualClock, MediaClock
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.worker import FrameEngine, FrameProducer, FrameRing, RenderPool
from tests.test_clock import StampedFrame, StampingEngine


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
