"""What the measuring client sends: speech at real-time pace, looped or once, with onsets stamped.

An onset's time is when the track hands aiortc the 20 ms chunk that starts with it: from there
on everything (encoding, network, server, back) is the system being measured.

`SpeechTrack` hands aiortc PCM, which aiortc resamples to 48 kHz stereo and encodes, 50 times a
second per client, in its thread pool. `OpusReplayTrack` encodes the speech once, before the run,
and hands aiortc the packets, which it only packetises: a browser's Opus, at a fraction of the
client's CPU, for benchmarks that run many clients beside the server they measure.
"""

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.clock import AUDIO_CHUNK_MS, AUDIO_CHUNK_SAMPLES
from lipstream.streaming.opus import OpusEncoder

INT16_FULL_SCALE = 32767
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
BROWSER_OPUS_BITRATE = 32_000  # bit/s: what Chromium spends on a mono microphone by default
# After speech that does not loop, the replay sends this much encoded silence, then repeats its
# last packet: the encoder has settled by then, so every further packet would be that one.
TRAILING_SILENCE_CHUNKS = 25


class _PacedTrack(MediaStreamTrack):
    """Hands aiortc one 20 ms item per chunk on a monotonic schedule from the first request;
    `handed_at[k]` is when chunk k was handed over."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._origin: float | None = None
        self.handed_at: list[float] = []

    async def recv(self) -> av.AudioFrame | av.Packet:
        chunk = len(self.handed_at)
        if self._origin is None:
            self._origin = time.monotonic()
        delay = self._origin + chunk * AUDIO_CHUNK_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        item = self._item(chunk)
        item.pts = chunk * AUDIO_CHUNK_SAMPLES
        item.time_base = AUDIO_TIME_BASE
        self.handed_at.append(time.monotonic())
        return item

    def _item(self, chunk: int) -> av.AudioFrame | av.Packet:
        raise NotImplementedError


class SpeechTrack(_PacedTrack):
    """Plays `pcm` (16 kHz mono float32) in 20 ms chunks of PCM, then silence (or `pcm` again if
    `loop`)."""

    def __init__(self, pcm: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self._pcm = np.clip(pcm, -1, 1).astype(np.float32)
        self._repeat = loop  # not `_loop`: MediaStreamTrack's event emitter owns that name

    def _item(self, chunk: int) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(self._samples(chunk * AUDIO_CHUNK_SAMPLES).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        return frame

    def _samples(self, start: int) -> np.ndarray:
        """The int16 chunk that begins at output sample `start`."""
        index = np.arange(start, start + AUDIO_CHUNK_SAMPLES)
        if self._repeat:
            index %= self._pcm.size
        inside = (index >= 0) & (index < self._pcm.size)
        piece = np.where(inside, self._pcm[np.clip(index, 0, self._pcm.size - 1)], 0.0)
        return (piece * INT16_FULL_SCALE).astype(np.int16)


class OpusReplayTrack(_PacedTrack):
    """`SpeechTrack`'s speech as 20 ms Opus packets encoded once at construction, then replayed:
    after it, silence (or, if `loop`, the packets again from the first; a looped `pcm` is padded
    with silence to a whole number of chunks)."""

    def __init__(self, pcm: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self._repeat = loop
        self.packets = encode_chunks(pcm, 0 if loop else TRAILING_SILENCE_CHUNKS)

    def _item(self, chunk: int) -> av.Packet:
        if self._repeat:
            chunk %= len(self.packets)
        return av.Packet(self.packets[min(chunk, len(self.packets) - 1)])


def encode_chunks(pcm: np.ndarray, silence_chunks: int) -> list[bytes]:
    """`pcm` (16 kHz float32) and `silence_chunks` of silence, one Opus packet per 20 ms chunk."""
    chunks = max(-(-pcm.size // AUDIO_CHUNK_SAMPLES), 1) + silence_chunks  # ceil; never none
    padded = np.zeros(chunks * AUDIO_CHUNK_SAMPLES, np.float32)
    padded[: pcm.size] = np.clip(pcm, -1, 1)
    encoder = OpusEncoder(bitrate=BROWSER_OPUS_BITRATE)
    return [encoder.encode(piece) for piece in padded.reshape(chunks, AUDIO_CHUNK_SAMPLES)]
