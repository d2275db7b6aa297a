"""AudioInbox: inbound speech waits here until the session's clock takes it, one frame at a time.

Packets arrive in bursts (network jitter, a concealed loss releasing the packets held behind
it, an event loop that read them late); frames are taken at exactly 25 per second. The inbox
keeps a small cushion (`cushion_ms`) so a late packet does not cut a word, hands out silence when
the peer sends nothing (idle frames keep coming), and drains what it holds beyond the cushion:
what stayed above it for `quiet_drain_ms` (its least over that time, so jitter's peaks are kept)
is dropped at once if that audio is quiet, or after `drain_force_ms` if speech goes on, because
latency that is kept never drains itself. `max_ms` is the hard cap for a burst. Symmetrically, a
depth that stayed short of the cushion for `quiet_drain_ms` (its most over that time, so jitter's
dips are not counted) is padded back with silence at a quiet moment: a sender whose clock runs slow
(a microphone's 50-500 ppm) would otherwise eat the cushion until a word is cut, again and again.

The cushion adapts, as a receiver's jitter buffer does: each underrun (speech that came late)
adds `grow_ms`, up to `max_target_ms`, and it shrinks by what it did not use: the least depth
beyond a frame seen at the takes of the last `settle_ms` (jitter that still comes keeps it; once
the network is calm it is back at `target_ms` within `settle_ms`). A clean network keeps the
least delay; a jittery one, or a busy server, stops cutting words after a few underruns.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from lipstream.engine.audio import rms
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS

FRAME_MS = 1000 // VIDEO_FPS  # 40
QUIET_RMS = 0.01  # about -40 dBFS: dropping audio this quiet is not heard


@dataclass(frozen=True)
class InboxConfig:
    target_ms: int = 20  # cushion kept beyond one frame once speech flows (its least)
    max_target_ms: int = 120  # the most the cushion grows to after underruns
    grow_ms: int = 20  # added to the cushion per underrun
    settle_ms: int = 1_000  # the cushion shrinks by what it did not use over this long
    slack_ms: int = 10  # depth this far above the cushion is left alone
    packet_ms: int = 20  # a sender's packet: excess up to this waits for a quiet moment to go
    quiet_drain_ms: int = 200  # excess held this long is latency, not jitter: dropped if quiet...
    drain_force_ms: int = 960  # ...or, speech or not, once held this long
    max_ms: int = 240  # above this, drop the oldest audio down to the cushion at once

    def samples(self, ms: int) -> int:
        return ms * SAMPLE_RATE // 1000


@dataclass
class InboxStats:
    underruns: int = 0  # speech ran dry mid-stream (not a pause of the sender's)
    dropped_samples: int = 0  # audio dropped to cap latency
    padded_samples: int = 0  # silence added in quiet moments to restore the cushion


class AudioInbox:
    """16 kHz mono float32 in, exactly SAMPLES_PER_VIDEO_FRAME out per `take()`."""

    def __init__(self, config: InboxConfig | None = None) -> None:
        self.config = config or InboxConfig()
        self.stats = InboxStats()
        self._chunks: list[np.ndarray] = []
        self._depth = 0  # samples held
        self._flowing = False  # False while priming: silence until the cushion is full
        self._dry = False  # ran dry while flowing: an underrun unless the sender paused
        self._least: int | None = None  # least excess beyond the cushion since it appeared
        self._held_ms = 0  # how long depth has stayed beyond the cushion (and its slack)
        self._least_short: int | None = None  # least shortfall of the cushion since it appeared
        self._short_ms = 0  # how long depth has stayed short of the cushion (and its slack)
        self.cushion_ms = self.config.target_ms  # adapts between target_ms and max_target_ms
        # depth beyond a frame at each take of the last settle_ms since an underrun or a shrink
        self._spare: deque[int] = deque(maxlen=self.config.settle_ms // FRAME_MS)

    @property
    def depth_ms(self) -> float:
        return self._depth * 1000 / SAMPLE_RATE

    @property
    def reserve_ms(self) -> float:
        """How long the audio held lasts beyond the next frame: how long missing audio can be
        waited for before a take runs dry."""
        return max(self.depth_ms - FRAME_MS, 0.0)

    def push(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        if self._dry:  # the audio that ran out came late: that was an underrun
            self._grow()
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
        if not self._flowing and self._depth >= self._keep:
            self._flowing = True
        if self._flowing and self._depth >= need:
            self._settle(self._depth - need)
            self._drain()
            self._pad()
            return self._pop(need)
        if self._flowing:  # ran dry mid-speech: wait for a full cushion again
            self._flowing, self._dry = False, True
        return np.zeros(need, np.float32)

    def _grow(self) -> None:
        """An underrun: a step more cushion. A step, not the whole lateness: one long stall (a
        busy server) would make every word after it wait for as long."""
        self._dry = False
        self.stats.underruns += 1
        self.cushion_ms = min(self.cushion_ms + self.config.grow_ms, self.config.max_target_ms)
        self._spare.clear()

    def _settle(self, spare: int) -> None:
        """Shrink the cushion by what no take of the last `settle_ms` needed of it."""
        self._spare.append(spare)
        if len(self._spare) < (self._spare.maxlen or 0) or self.cushion_ms <= self.config.target_ms:
            return
        unused_ms = min(self._spare) * 1000 // SAMPLE_RATE
        if unused_ms > 0:
            self.cushion_ms = max(self.cushion_ms - unused_ms, self.config.target_ms)
            self._spare.clear()

    @property
    def _keep(self) -> int:
        """Samples held right before a take when the cushion is just right."""
        return SAMPLES_PER_VIDEO_FRAME + self.config.samples(self.cushion_ms)

    def _drain(self) -> None:
        """Drop the least excess beyond the cushion once it has been held a while (so jitter's
        peaks, which come and go, are kept): soon if that audio is quiet, later if it is not."""
        excess = self._depth - self._keep
        if excess <= self.config.samples(self.config.slack_ms):
            self._least, self._held_ms = None, 0
            return
        self._least = excess if self._least is None else min(self._least, excess)
        self._held_ms += FRAME_MS
        if self._held_ms >= self.config.quiet_drain_ms and self._quiet(self._least):
            self._drop(self._least)
        elif self._held_ms >= self.config.drain_force_ms:  # speech goes on: cut what is not packetization
            self._drop(max(self._least - self.config.samples(self.config.packet_ms), 0))
        else:
            return
        self._least, self._held_ms = None, 0

    def _pad(self) -> None:
        """Put back, as silence before a quiet frame, the least the cushion was short by while it
        stayed short a while (a slow sender's clock; jitter's dips come and go)."""
        short = self._keep - self._depth
        if short <= self.config.samples(self.config.slack_ms):
            self._least_short, self._short_ms = None, 0
            return
        self._least_short = short if self._least_short is None else min(self._least_short, short)
        self._short_ms += FRAME_MS
        if self._short_ms >= self.config.quiet_drain_ms and self._quiet(SAMPLES_PER_VIDEO_FRAME):
            self._chunks.insert(0, np.zeros(self._least_short, np.float32))
            self._depth += self._least_short
            self.stats.padded_samples += self._least_short
            self._least_short, self._short_ms = None, 0

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
