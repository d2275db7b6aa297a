"""aiortc tracks that send a session's frames and the audio made with them, paced by its clock.

aiortc sends as soon as `recv()` returns, so each track sleeps until its next deadline on the
session's `MediaClock`. Video frame n and audio chunks 2n, 2n+1 carry the same media time (pts
n * 3600 at 90 kHz; pts 640 n at 16 kHz) and are due at the same moment; the audio is handed over
after the video's measured encode-and-send delay, so sound and picture leave together. Every
session track and every viewer track reads the same `FrameRing`; each sender encodes its own copy.
"""

from collections import deque
from fractions import Fraction
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from lipstream.engine.constants import SAMPLE_RATE, VIDEO_CLOCK_RATE, VIDEO_PTS_PER_FRAME
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES, CHUNKS_PER_FRAME, MediaClock
from lipstream.streaming.controlstream import ControlStream
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.opus import OPUS_APPLICATION_RESTRICTED_LOWDELAY, OpusEncoder
from lipstream.streaming.worker import FrameRing, ReadyFrame

VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
# A sender that stalls longer than this (a blocked encoder) jumps to the present instead of
# bursting out old media: both tracks jump to the same clock position, so they stay in sync.
MAX_BEHIND_S = 0.2
# A frame still being made when due (a busy pool) is waited for this long before the video repeats
# the last picture and the audio sends silence: a little jitter, which receivers' buffers absorb,
# rather than a dropout.
LATE_WAIT_S = 0.03
# The video track hands a frame to aiortc, which encodes it (VP8 at 512 px: ~5-10 ms) before it
# leaves, and a busy machine makes its sender late too; audio packets leave at once. The audio
# track hands each chunk over that much later, so both leave together (RTCP sender reports tie RTP
# time to send time, and that is what a receiver lines up).
SEND_LATENCY_WEIGHT = 0.1  # per frame: follows a change of load within about a second
MAX_SEND_LATENCY_S = 0.1
BLANK_I420 = np.zeros((96, 64), np.uint8)  # a black 64x64 picture, before any frame was made
BLANK_I420.flags.writeable = False
# bit/s: speech at 16 kHz mono; aiortc's own encoder spends 96k on 48 kHz stereo. CELT (below) needs
# more bits than SILK for the same fidelity: at 48k it moved the speech 2.0-2.2 dB, at 64k 1.4-1.55.
OPUS_BITRATE = 64_000
# benchmarks/opus_send.py on espeak speech (docs/profile.md section 13): libopus's restricted
# low-delay mode (CELT only) at complexity 3 and 64 kbit/s costs ~0.4x the CPU of VoIP mode at 5 and
# 48 kbit/s (what was sent before), moves the decoded log-mel less (1.4 dB against 1.9), and its
# lookahead is 2.5 ms instead of 6.5. It has no in-band FEC, which the server's outgoing audio never
# used (the loss on the receiver's side is not known to it).
OPUS_APPLICATION = OPUS_APPLICATION_RESTRICTED_LOWDELAY
OPUS_COMPLEXITY = 3  # libopus 0..10
INT16_FULL_SCALE = 32767
SILENT_CHUNK = np.zeros(AUDIO_CHUNK_SAMPLES, np.float32)
SILENT_CHUNK.flags.writeable = False


class ChunkEncoder(Protocol):
    """Turns one 20 ms chunk (16 kHz float32, its first sample's pts) into what aiortc is handed."""

    lookahead_s: float  # how far the sound of its output lags the input chunk

    def __call__(self, pcm: np.ndarray, pts: int) -> av.Packet | av.AudioFrame: ...


class RawChunks:
    """Hands over PCM frames (aiortc then encodes): for tests that read them."""

    lookahead_s = 0.0

    def __call__(self, pcm: np.ndarray, pts: int) -> av.Packet | av.AudioFrame:
        s16 = (np.clip(pcm, -1.0, 1.0) * INT16_FULL_SCALE).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        return frame


class OpusChunkEncoder:
    """Encodes each 20 ms chunk to one Opus packet at once, on the calling thread.

    Handing aiortc packets instead of frames matters twice. Its own encoder resamples to 48 kHz and
    its resampler holds back a few samples, so the packet for chunk k would leave only with chunk
    k+1 (measured: audio 18 ms behind video). And it encodes in a thread pool shared with every
    video encoder, one hop per packet, 50 a second: on a busy machine audio packets queued behind
    video encodes. libopus takes 16 kHz float directly (no PyAV frame to build: this runs on the
    event loop), and aiortc only packetizes a packet.
    """

    def __init__(self, bitrate: int = OPUS_BITRATE, complexity: int = OPUS_COMPLEXITY,
                 application: int = OPUS_APPLICATION) -> None:
        self.encoder = OpusEncoder(bitrate=bitrate, complexity=complexity, application=application)
        # What a packet decodes to starts this much before its chunk (2.5 ms): its pts says so,
        # and the track sends it that much earlier.
        self._lookahead_samples = self.encoder.lookahead_samples
        self.lookahead_s = self._lookahead_samples / SAMPLE_RATE

    def __call__(self, pcm: np.ndarray, pts: int) -> av.Packet | av.AudioFrame:
        packet = av.Packet(self.encoder.encode(np.clip(pcm, -1.0, 1.0)))
        packet.pts = pts - self._lookahead_samples
        packet.time_base = AUDIO_TIME_BASE
        return packet


class SyncProbe:
    """Hand-off times of a session's video frames and audio chunks -> the A/V offset metric."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self._video: dict[int, float] = {}
        self._audio: dict[int, float] = {}
        self.offsets_s: deque[float] = deque(maxlen=1000)  # video minus audio, newest last

    def video(self, index: int, t: float) -> None:
        self._pair(index, video_t=t)

    def audio(self, chunk: int, t: float) -> None:
        if chunk % CHUNKS_PER_FRAME == 0:  # the chunk that starts frame chunk // 2
            self._pair(chunk // CHUNKS_PER_FRAME, audio_t=t)

    def _pair(self, index: int, video_t: float | None = None, audio_t: float | None = None) -> None:
        if video_t is not None:
            self._video[index] = video_t
        if audio_t is not None:
            self._audio[index] = audio_t
        if index in self._video and index in self._audio:
            offset = self._video.pop(index) - self._audio.pop(index)
            self.metrics.av_offset_seconds.observe(offset)
            self.offsets_s.append(offset)
        for table in (self._video, self._audio):  # unmatched entries of skipped indices
            for stale in [i for i in table if i < index - 50]:
                del table[stale]


class _SessionTrack(MediaStreamTrack):
    def __init__(self, ring: FrameRing, clock: MediaClock, start_index: int | None,
                 probe: SyncProbe | None) -> None:
        super().__init__()  # aiortc's examples: "don't forget this!"
        self.ring, self.clock, self.probe = ring, clock, probe
        self._start_index = start_index  # None: join at the present (viewers)

    async def _await_start(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        await self.clock.wait_started()
        if self._start_index is None:
            self._start_index = self.clock.frame_index_at(self.clock.now()) + 1
        return self._start_index


class SessionVideoTrack(_SessionTrack):
    kind = "video"

    def __init__(self, ring: FrameRing, clock: MediaClock, metrics: ServerMetrics | None = None,
                 start_index: int | None = 0, probe: SyncProbe | None = None,
                 controls: ControlStream | None = None) -> None:
        super().__init__(ring, clock, start_index, probe)
        self.metrics = metrics  # set on the session's own track only: late frames counted once
        self.controls = controls  # the peer's control stream: a message per frame sent
        self._index: int | None = None
        self._last: ReadyFrame | None = None  # the frame last shown (a late frame repeats it)
        self._last_due: float | None = None  # when the frame last handed over was due
        self.send_latency_s = 0.0  # due time to the next request: lateness + encode + send, smoothed
        self.sent = 0
        self.late = 0

    async def recv(self) -> av.VideoFrame:
        if self._last_due is not None:  # the sender asks for the next frame once it sent the last
            latest = min(self.clock.now() - self._last_due, MAX_SEND_LATENCY_S)
            self.send_latency_s += SEND_LATENCY_WEIGHT * (latest - self.send_latency_s)
        if self._index is None:
            self._index = await self._await_start()
        due = self.clock.frame_time(self._index)
        await self.clock.sleep_until(due)
        if self.clock.now() - due > MAX_BEHIND_S:
            self._index = self.clock.frame_index_at(self.clock.now())
        index = self._index
        self._index += 1
        self._last_due = self.clock.frame_time(index)
        return self._frame(index, await self.ring.wait_for(index, LATE_WAIT_S))

    def _frame(self, index: int, made: ReadyFrame | None) -> av.VideoFrame:
        if made is None:
            self.late += 1
            if self.metrics is not None:
                self.metrics.frames.labels("late").inc()
        shown = made or self._last or self.ring.get(self.ring.newest)
        self._last = shown
        if shown is not None and self.controls is not None:
            self.controls.send(index, shown.controls, shown.visemes, shown.shown)
        # Wrapped, not copied (0.01 ms instead of 0.24 on the event loop, per frame and sender):
        # a ReadyFrame's picture is never written after it is made, and the encoder only reads it.
        frame = av.VideoFrame.from_numpy_buffer(shown.yuv if shown is not None else BLANK_I420,
                                                format="yuv420p")
        frame.pts = index * VIDEO_PTS_PER_FRAME
        frame.time_base = VIDEO_TIME_BASE
        self.sent += 1
        if self.probe is not None:  # when it will leave: after its encode
            self.probe.video(index, self.clock.now() + self.send_latency_s)
        return frame


class SessionAudioTrack(_SessionTrack):
    """The engine's audio: the input delayed by exactly the pipeline latency, 20 ms per frame."""

    kind = "audio"

    def __init__(self, ring: FrameRing, clock: MediaClock, start_index: int | None = 0,
                 probe: SyncProbe | None = None,
                 encode: ChunkEncoder | None = None, video: SessionVideoTrack | None = None) -> None:
        super().__init__(ring, clock, start_index, probe)
        self.encode = encode or OpusChunkEncoder()
        self.video = video  # whose send latency the audio waits out
        self._chunk: int | None = None

    async def recv(self) -> av.Packet | av.AudioFrame:
        if self._chunk is None:
            self._chunk = await self._await_start() * CHUNKS_PER_FRAME
        # Sent when its sound is due: its pts, plus the time its video takes to be encoded and sent
        video_latency_s = self.video.send_latency_s if self.video is not None else 0.0
        due = self.clock.chunk_time(self._chunk) - self.encode.lookahead_s + video_latency_s
        await self.clock.sleep_until(due)
        if self.clock.now() - due > MAX_BEHIND_S:
            self._chunk = self.clock.frame_index_at(self.clock.now()) * CHUNKS_PER_FRAME
        chunk = self._chunk
        self._chunk += 1
        made = await self.ring.wait_for(chunk // CHUNKS_PER_FRAME, LATE_WAIT_S)
        return self.encode(self._pcm(chunk, made), chunk * AUDIO_CHUNK_SAMPLES)

    def _pcm(self, chunk: int, made: ReadyFrame | None) -> np.ndarray:
        """The chunk's 20 ms of the frame's audio; silence for a frame not made in time."""
        if self.probe is not None:
            self.probe.audio(chunk, self.clock.now())
        if made is None:
            return SILENT_CHUNK
        start = (chunk % CHUNKS_PER_FRAME) * AUDIO_CHUNK_SAMPLES
        return made.audio[start : start + AUDIO_CHUNK_SAMPLES]
