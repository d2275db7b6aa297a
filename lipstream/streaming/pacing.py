"""Pacing: when to start frame n, whether to render it, and what to learn from how it went.

One rule for every paced source of frames, a server session's `FrameProducer` and an embedder's
paced `AsyncEngine`. Frame n starts just in time: as long before it is due as renders have been
taking plus how late the event loop has been waking (each smoothed, plus a few deviations and a
margin, clamped), so the audio it takes has waited as little as it can. If the projected finish
would miss the due time (a busy pool, a slow machine, a consumer that came late) the frame is made
without rendering it: the image repeats, the mouth controls and the audio advance, time is kept.
Skipping is also the pressure valve of a starved machine: a render finishing late costs the CPU
and still misses its frame.
"""

from dataclasses import dataclass

from lipstream.streaming.clock import MediaClock


@dataclass(frozen=True)
class PacingConfig:
    lead_ms: int = 80  # the most a frame is started before it is due (and the lead before any render)
    # A session's frame 0 is due this long after the peer connects: enough for the primer and one
    # render of a warm engine (the server renders one at start-up), not a full lead_ms of waiting.
    start_lead_ms: int = 30
    min_lead_ms: int = 10  # the least: a render never takes less than a scheduling hiccup
    margin_ms: int = 5  # added to the estimate for the event loop's wake-up latency
    deviations: float = 3.0  # how many mean deviations of render time the lead covers
    ema_weight: float = 0.2  # how fast the render-time estimate follows the last renders


class FramePacer:
    """The just-in-time lead and the render-or-skip rule of one timeline of frames."""

    def __init__(self, clock: MediaClock, config: PacingConfig | None = None) -> None:
        self.clock = clock
        self.config = config or PacingConfig()
        self.render_estimate_s = 0.0  # submit-to-finish time of a rendered frame, smoothed
        self.render_deviation_s = 0.0  # mean absolute deviation from that estimate, smoothed
        self._learnt = False  # whether a drawn frame has been timed yet
        # How much later than planned the event loop woke us to start a frame, smoothed: a busy
        # loop (other sessions' packets, the GIL held by render and encoder threads) wakes it
        # several ms late, and a lead that ignores that leaves renders no time.
        self.wake_lateness_s = 0.0
        self.counts = {"rendered": 0, "skipped": 0}

    def lead_s(self) -> float:
        """How long before its due time the next frame starts: the loop's wake-up lateness + render
        time + jitter, clamped."""
        if self.counts["rendered"] == 0:
            return self.config.lead_ms / 1000
        c = self.config
        wanted_s = (self.wake_lateness_s + self.render_estimate_s
                    + c.deviations * self.render_deviation_s + c.margin_ms / 1000)
        return min(max(wanted_s, c.min_lead_ms / 1000), c.lead_ms / 1000)

    async def wait_to_start(self, index: int) -> float:
        """Sleep until frame `index` should start -> the lead it starts with. Learns how late the
        loop wakes (not when already past the start, e.g. the last frame itself ran past it: that
        is the render's lateness, which its own estimate covers)."""
        lead_s = self.lead_s()
        start = self.clock.frame_time(index) - lead_s
        behind = start <= self.clock.now()
        await self.clock.sleep_until(start)
        if not behind:
            w = self.config.ema_weight
            self.wake_lateness_s = (1 - w) * self.wake_lateness_s + w * (self.clock.now() - start)
        return lead_s

    def should_render(self, index: int) -> bool:
        """Whether a render of frame `index` started now is projected to finish by its due time."""
        return self.clock.now() + self.render_estimate_s <= self.clock.frame_time(index)

    def made(self, rendered: bool, elapsed_s: float, drawn: bool) -> None:
        """A frame was made: `rendered` as `should_render` said, in `elapsed_s` from submission;
        `drawn` if it is a new picture (an idle face's free repeat says nothing of render time)."""
        self.counts["rendered" if rendered else "skipped"] += 1
        if not rendered:
            self._decay()
        elif drawn:
            self._learn(elapsed_s)

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
        """After a skip: decay both, so a source that fell behind tries rendering again once it can."""
        self.render_estimate_s *= 1 - self.config.ema_weight
        self.render_deviation_s *= 1 - self.config.ema_weight
