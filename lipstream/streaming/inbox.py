"""AudioInbox: inbound speech waits here until the session's clock takes it, one frame at a time.

Packets arrive in bursts (network jitter, a concealed loss releasing the packets held behind
it); frames are taken at exactly 25 per second. The inbox keeps a small cushion (`target_ms`) so
a late packet does not cut a word, hands out silence when the peer sends nothing (idle frames
keep coming), and drains what it holds beyond the cushion: what stayed above it for a whole
`drain_window_ms` (the window's least excess, so jitter peaks are kept) is dropped at the next
quiet moment, or after `drain_force_ms` anyway, because latency that is kept never drains itself.
`max_ms` is the hard cap for a burst.

The cushion adapts, as a receiver's jitter buffer does: each underrun (speech that came late) adds
`grow_ms` to it, up to `max_target_ms`, and every `settle_ms` (a second) without one takes
`grow_ms` back, down to `target_ms`. A clean network keeps the least delay; a jittery one, or a
server so busy that its event loop reads packets late, stops cutting words after a few underruns
instead of at every one.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.audio import rms
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS

FRAME_MS = 1000 // VIDEO_FPS  # 40
QUIET_RMS = 0.01  # about -40 dBFS: dropping audio this quiet is not heard


@dataclass(frozen=True)
class InboxConfig:
    target_ms: int = 40  # cushion kept beyond one frame once speech flows (its least)
    max_target_ms: int = 120  # the most the cushion grows to after underruns
    grow_ms: int = 20  # added to the cushion per underrun, taken back per calm `settle_ms`
    settle_ms: int = 1_000  # this long without an underrun: the cushion shrinks a step
    slack_ms: int = 10  # depth this far above target is left alone (packetization)
    drain_window_ms: int = 480  # excess held for all of a window is latency, not jitter: drop it
    drain_force_ms: int = 480  # ...at a quiet moment, or after this long whatever it holds
    max_ms: int = 240  # above this, drop the oldest audio down to target at once

    def samples(self, ms: int) -> int:
        return ms * SAMPLE_RATE // 1000


@dataclass
class InboxStats:
    underruns: int = 0  # speech ran dry mid-stream (not a pause of the sender's)
    dropped_samples: int = 0  # audio dropped to cap latency


class AudioInbox:
    """16 kHz mono float32 in, exactly SAMPLES_PER_VIDEO_FRAME out per `take()`."""

    def __init__(self, config: InboxConfig | None = None) -> None:
        self.config = config or InboxConfig()
        self.stats = InboxStats()
        self._chunks: list[np.ndarray] = []
        self._depth = 0  # samples held
        self._flowing = False  # False while priming: silence until the cushion is full
        self._dry = False  # ran dry while flowing: an underrun unless the sender paused
        self._window_min = self.config.samples(self.config.max_ms)  # least excess this window
        self._window_ms = 0
        self._owed, self._owed_ms = 0, 0  # excess to drop at a quiet moment, and for how long
        self.cushion_ms = self.config.target_ms  # adapts between target_ms and max_target_ms
        self._calm_ms = 0  # since the last underrun (or the last shrink)

    @property
    def depth_ms(self) -> float:
        return self._depth * 1000 / SAMPLE_RATE

    def push(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        if self._dry:  # the audio that ran out came late: that was an underrun
            self._dry = False
            self.stats.underruns += 1
            self.cushion_ms = min(self.cushion_ms + self.config.grow_ms, self.config.max_target_ms)
            self._calm_ms = 0
        self._chunks.append(audio.astype(np.float32, copy=False))
        self._depth += audio.size
        if self._depth > self.config.samples(self.config.max_ms):
            self._drop(self._depth - self._keep)

    def pause(self) -> None:
        """The sender paused (DTX, an outage it resumed from): running dry was not an underrun,
        and what waits for a cushion from before the pause is stale: it would delay what follows."""
        self._dry = False
        if not self._flowing and self._depth:
            self._drop(self._depth)

    def take(self) -> np.ndarray:
        """One frame of audio: speech when enough has arrived, else silence."""
        need = SAMPLES_PER_VIDEO_FRAME
        self._settle()
        if not self._flowing and self._depth >= self._keep:
            self._flowing = True
        if self._flowing and self._depth >= need:
            self._drain()
            return self._pop(need)
        if self._flowing:  # ran dry mid-speech: wait for a full cushion again
            self._flowing, self._dry = False, True
        return np.zeros(need, np.float32)

    def _settle(self) -> None:
        """A step of the cushion back towards target_ms after each calm `settle_ms`."""
        self._calm_ms += FRAME_MS
        if self._calm_ms >= self.config.settle_ms and self.cushion_ms > self.config.target_ms:
            self.cushion_ms = max(self.cushion_ms - self.config.grow_ms, self.config.target_ms)
            self._calm_ms = 0

    @property
    def _keep(self) -> int:
        """Samples held right before a take when the cushion is just right."""
        return SAMPLES_PER_VIDEO_FRAME + self.config.samples(self.cushion_ms)

    def _drain(self) -> None:
        """Drop what stayed beyond the cushion for a whole window (its least, not its peaks)."""
        excess = self._depth - self._keep
        self._window_min = min(self._window_min, excess)
        self._window_ms += FRAME_MS
        if self._window_ms >= self.config.drain_window_ms:
            if self._window_min > self.config.samples(self.config.slack_ms):
                self._owed, self._owed_ms = self._window_min, 0
            self._window_min, self._window_ms = excess, 0
        if self._owed <= 0:
            return
        self._owed_ms += FRAME_MS
        owed = min(self._owed, excess)
        if owed > 0 and (self._quiet(owed) or self._owed_ms >= self.config.drain_force_ms):
            self._drop(owed)
            self._owed = 0
        elif owed <= 0:
            self._owed = 0

    def _quiet(self, n: int) -> bool:
        return rms(np.concatenate(self._chunks)[:n]) < QUIET_RMS

    def _pop(self, n: int) -> np.ndarray:
        joined: np.ndarray = np.concatenate(self._chunks)
        out, rest = joined[:n], joined[n:]
        self._chunks = [rest] if rest.size else []
        self._depth = rest.size
        return out

    def _drop(self, n: int) -> None:
        self._pop(n)
        self.stats.dropped_samples += n
