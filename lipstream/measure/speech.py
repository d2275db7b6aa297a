"""What the measuring client sends: speech at real-time pace, looped or once, with onsets stamped.

An onset's time is when the track hands aiortc the 20 ms chunk that starts with it: from there
on everything (encoding, network, server, back) is the system being measured.
"""

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.clock import AUDIO_CHUNK_MS, AUDIO_CHUNK_SAMPLES

INT16_FULL_SCALE = 32767


class SpeechTrack(MediaStreamTrack):
    """Plays `pcm` (16 kHz mono float32) in 20 ms chunks on a monotonic schedule, then silence
    (or `pcm` again if `loop`); `handed_at[k]` is when chunk k was handed to aiortc."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self._pcm = np.clip(pcm, -1, 1).astype(np.float32)
        self._repeat = loop  # not `_loop`: MediaStreamTrack's event emitter owns that name
        self._origin: float | None = None
        self.handed_at: list[float] = []

    async def recv(self) -> av.AudioFrame:
        chunk = len(self.handed_at)
        if self._origin is None:
            self._origin = time.monotonic()
        delay = self._origin + chunk * AUDIO_CHUNK_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        start = chunk * AUDIO_CHUNK_SAMPLES
        frame = av.AudioFrame.from_ndarray(self._samples(start).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self.handed_at.append(time.monotonic())
        return frame

    def _samples(self, start: int) -> np.ndarray:
        """The int16 chunk that begins at output sample `start`."""
        index = np.arange(start, start + AUDIO_CHUNK_SAMPLES)
        if self._repeat:
            index %= self._pcm.size
        inside = (index >= 0) & (index < self._pcm.size)
        piece = np.where(inside, self._pcm[np.clip(index, 0, self._pcm.size - 1)], 0.0)
        return (piece * INT16_FULL_SCALE).astype(np.int16)
