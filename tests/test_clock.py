"""The media clock, inbox and tracks: exact 25 fps pacing, audio paired with its frame, no drift."""

import asyncio
from dataclasses import dataclass, field

import cv2
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.controls import N_CONTROLS
from lipstream.streaming.clock import FRAME_S, ManualClock, MediaClock
from lipstream.streaming.inbox import AudioInbox, InboxConfig
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.pacing import PacingConfig
from lipstream.streaming.tracks import RawChunks, SessionAudioTrack, SessionVideoTrack
from lipstream.streaming.worker import FrameProducer, FrameRing, RenderPool


@dataclass(frozen=True)
class StampedFrame:
    index: int
    image: np.ndarray
    audio: np.ndarray
    rendered: bool
    controls: np.ndarray = field(default_factory=lambda: np.zeros(N_CONTROLS, np.float32))
    visemes: np.ndarray | None = None

    @property
    def yuv(self) -> np.ndarray:
        """I420 as the Engine's Frame gives it: one array per picture, shared by frames repeating it."""
        if _LAST_I420[0] is not self.image:
            _LAST_I420[:] = [self.image, cv2.cvtColor(self.image, cv2.COLOR_RGB2YUV_I420)]
            _LAST_I420[1].flags.writeable = False
        return _LAST_I420[1]


_LAST_I420: list[np.ndarray] = [np.empty(0), np.empty(0)]  # the last image converted, and its I420


class StampingEngine:
    """Stands in for the Engine where only timing is under test (15,000 real renders would take
    minutes): frame n's audio is the input delayed by the same latency, its image is tiny."""

    latency_samples = SAMPLES_PER_VIDEO_FRAME + 640  # one frame + a 40 ms lookahead

    def __init__(self) -> None:
        self._audio = np.zeros(0, np.float32)
        self._index = 0

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        assert sample_rate == SAMPLE_RATE
        self._audio = np.concatenate([self._audio, pcm])

    def pop_frame(self, render: bool = True) -> StampedFrame | None:
        if self._audio.size < self.latency_samples:
            return None
        audio, self._audio = self._audio[:SAMPLES_PER_VIDEO_FRAME], self._audio[SAMPLES_PER_VIDEO_FRAME:]
        frame = StampedFrame(self._index, np.full((16, 16, 3), self._index % 256, np.uint8), audio, render)
        self._index += 1
        return frame


async def test_ten_minutes_of_media_time_without_drift() -> None:
    """Frame n leaves at exactly origin + n/25 with pts n*3600; its audio leaves with it."""
    clock = ManualClock()
    media = MediaClock(clock)
    metrics = ServerMetrics()
    inbox = AudioInbox()  # its 40 ms cushion absorbs input arriving in step with the ticks
    ring = FrameRing(media, 240)
    pool = RenderPool(1)
    producer = FrameProducer(StampingEngine(), inbox, media, pool, ring, metrics)
    video = SessionVideoTrack(ring, media, metrics, start_index=0)
    audio = SessionAudioTrack(ring, media, start_index=0, encode=RawChunks())  # PCM, to read it
    n_frames = 10 * 60 * 25
    sent_video: list[tuple[int, float]] = []
    sent_audio: list[tuple[int, float, float]] = []

    async def pull_video() -> None:
        for _ in range(n_frames):
            frame = await video.recv()
            sent_video.append((frame.pts, clock.now()))

    async def pull_audio() -> None:
        for k in range(2 * n_frames):
            # speech in: chunk k of the input carries the value k (kept below 1 to survive s16)
            inbox.push(np.full(320, (k % 1000) / 1000, np.float32))
            frame = await audio.recv()
            sent_audio.append((frame.pts, clock.now(), float(frame.to_ndarray()[0, 0]) / 32767))

    media.start(lead_s=PacingConfig().lead_ms / 1000)  # as a session does: frame 0 made in time
    tasks = [asyncio.create_task(c) for c in (producer.run(), pull_video(), pull_audio())]
    while not tasks[1].done() or not tasks[2].done():
        while clock.sleepers < sum(not t.done() for t in tasks):  # let every task reach its sleep
            await asyncio.sleep(0)
        clock.release_next()
    tasks[0].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pool.shutdown()

    pts = np.array([p for p, _ in sent_video])
    times = np.array([t for _, t in sent_video]) - media.origin
    np.testing.assert_array_equal(pts, np.arange(n_frames) * 3600)
    np.testing.assert_allclose(times, np.arange(n_frames) * FRAME_S, atol=1e-6)  # last one: 600 s
    assert video.late == 0 and producer.counts["skipped"] == 0 and inbox.stats.underruns == 0
    audio_pts = np.array([p for p, _, _ in sent_audio])
    audio_times = np.array([t for _, t, _ in sent_audio]) - media.origin
    np.testing.assert_array_equal(audio_pts, np.arange(2 * n_frames) * 320)
    np.testing.assert_allclose(audio_times[::2], times, atol=1e-6)  # chunk 2n leaves with frame n
    # The content is the input, delayed by a fixed number of chunks for the whole ten minutes.
    values = np.array([v for _, _, v in sent_audio])
    speech = values > 0
    # ...once the inbox has drained what priming left beyond its cushion (within two seconds).
    settled = int(np.argmax(speech)) + 2 * 2 * 25
    delay = settled - round(values[settled] * 1000)
    tail = np.arange(settled, 2 * n_frames)
    np.testing.assert_allclose(values[tail], ((tail - delay) % 1000) / 1000, atol=1e-4)


def test_inbox_waits_for_a_cushion_then_hands_out_frames() -> None:
    inbox = AudioInbox(InboxConfig(target_ms=40, max_ms=240))
    speech = np.linspace(-0.5, 0.5, 960, dtype=np.float32)
    inbox.push(speech)  # 60 ms: less than one frame + 40 ms cushion
    assert not inbox.take().any(), "must prime before speaking, or the next packet cuts a word"
    inbox.push(speech[:320])  # now 80 ms
    np.testing.assert_array_equal(inbox.take(), speech[:640])


def test_inbox_gives_silence_when_nothing_arrives_and_counts_underruns() -> None:
    inbox = AudioInbox(InboxConfig(target_ms=0))
    assert inbox.take().shape == (SAMPLES_PER_VIDEO_FRAME,)  # idle: silence, frames keep coming
    inbox.push(np.ones(700, np.float32))
    assert inbox.take().all()
    assert not inbox.take().any()  # only 60 samples left: silence...
    inbox.push(np.ones(320, np.float32))
    assert inbox.stats.underruns == 1  # ...and once more speech comes, that cut is counted


def test_inbox_caps_latency_by_dropping_the_oldest_audio() -> None:
    inbox = AudioInbox(InboxConfig(target_ms=40, max_ms=240))
    burst = np.arange(16 * 500, dtype=np.float32)  # 500 ms arriving at once (a stalled network)
    inbox.push(burst)
    assert inbox.depth_ms <= 240
    assert inbox.stats.dropped_samples == burst.size - (640 + 640)
    np.testing.assert_array_equal(inbox.take(), burst[-1280:-640])  # the newest audio is kept
