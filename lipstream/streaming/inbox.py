"""AudioInbox: inbound speech waits here until the session's clock takes it, one frame at a time.

Packets arrive in bursts (network jitter, aiortc's receive buffer); frames are taken at exactly
25 per second. The inbox keeps a small cushion (`target_ms`) so a late packet does not cut a word,
hands out silence when the peer sends nothing (idle frames keep coming), and never holds more than
`max_ms`: beyond that it drops the oldest audio, because latency that builds up never drains.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME


@dataclass(frozen=True)
class InboxConfig:
    target_ms: int = 40  # cushion kept beyond one frame once speech flows
    max_ms: int = 240  # above this, drop the oldest audio down to target

    def samples(self, ms: int) -> int:
        return ms * SAMPLE_RATE // 1000


@dataclass
class InboxStats:
    underruns: int = 0  # frames that wanted speech and got silence
    dropped_samples: int = 0  # audio dropped to cap latency


class AudioInbox:
    """16 kHz mono float32 in, exactly SAMPLES_PER_VIDEO_FRAME out per `take()`."""

    def __init__(self, config: InboxConfig | None = None) -> None:
        self.config = config or InboxConfig()
        self.stats = InboxStats()
        self._chunks: list[np.ndarray] = []
        self._depth = 0  # samples held
        self._flowing = False  # False while priming: silence until the cushion is full

    @property
    def depth_ms(self) -> float:
        return self._depth * 1000 / SAMPLE_RATE

    def push(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self._chunks.append(audio.astype(np.float32, copy=False))
        self._depth += audio.size
        if self._depth > self.config.samples(self.config.max_ms):
            keep = SAMPLES_PER_VIDEO_FRAME + self.config.samples(self.config.target_ms)
            self._drop(self._depth - keep)

    def take(self) -> np.ndarray:
        """One frame of audio: speech when enough has arrived, else silence."""
        need = SAMPLES_PER_VIDEO_FRAME
        if not self._flowing and self._depth >= need + self.config.samples(self.config.target_ms):
            self._flowing = True
        if self._flowing and self._depth >= need:
            return self._pop(need)
        if self._flowing:  # ran dry mid-speech: wait for a full cushion again
            self._flowing = False
            self.stats.underruns += 1
        return np.zeros(need, np.float32)

    def _pop(self, n: int) -> np.ndarray:
        joined: np.ndarray = np.concatenate(self._chunks)
        out, rest = joined[:n], joined[n:]
        self._chunks = [rest] if rest.size else []
        self._depth = rest.size
        return out

    def _drop(self, n: int) -> None:
        self._pop(n)
        self.stats.dropped_samples += n
