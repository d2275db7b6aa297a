"""Speech onset -> the avatar's mouth opening, measured from outside a live `lipstream serve`.

A real aiortc peer sends voiced bursts after silence at real-time pace; each onset is stamped
when its first chunk is handed to aiortc (`SpeechTrack`). For each onset, the first received
frame after it whose mouth opens (`MouthOpenDetector`, checked by FaceMesh) gives two latencies:
to the arrival of that frame's first RTP packet, and to the frame coming out of the decoder.
The same run gives the time to first frame of a new session (POST -> first frame decoded) and
the server's own stage means from /metrics, which `report.decomposition` lines up against them.
"""

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiohttp
import numpy as np

from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import ConfigError, ServerError
from lipstream.measure.mouth import MouthOpenDetector
from lipstream.measure.server import frame_counts, scrape, stage_means_ms
from lipstream.measure.speech import SpeechTrack
from lipstream.streaming.client import Publisher, Reception
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES, FRAME_S

VIDEO_CLOCK_RATE = 90_000  # RTP clock of video
RTP_WRAP = 2**32
BURST_F0_HZ = 130.0  # a low voice: its harmonics fill the speech band like a held vowel
BURST_HARMONICS = 20
BURST_RAMP_S = 0.01  # fade in/out: no click, but the onset stays within one 20 ms chunk
BURST_PEAK = 0.25  # full scale = 1
SETTLED_FRACTION = 0.75  # of the lead-in silence, after which the server's counters are read
LATE_LIMIT_S = 10.0  # how long past the end of the sent audio the last frames are waited for
MAX_RUN_S = 600.0  # of sent audio, held in memory with every frame received: ~15,000 frames
CONNECT_TIMEOUT_S = 30.0  # POST answered -> ICE and DTLS connected


@dataclass(frozen=True)
class LatencyConfig:
    onsets: int = 10
    lead_s: float = 2.0  # silence before the first burst: the session settles
    burst_s: float = 0.4  # one voiced burst: the mouth opens within its first frames
    gap_s: float = 1.6  # silence after each burst: the mouth is back at rest before the next
    tail_s: float = 1.0  # kept receiving after the last burst
    frame_size: int = 256  # received frames are analysed (and kept) at this side
    # A self-check: every other burst starts this much after its stamped onset. The measured
    # latency of those onsets must exceed the others' by as much (`injected_delay_recovered_ms`);
    # use whole frames (40 ms): the open frame can only move by whole frames.
    inject_delay_s: float = 0.0

    def __post_init__(self) -> None:
        period_s = self.burst_s + self.gap_s
        most = int((MAX_RUN_S - self.lead_s - self.tail_s) // period_s)
        if not 1 <= self.onsets <= most:
            raise ConfigError(f"--onsets {self.onsets}: send at least 1 speech burst and at most {most} "
                              f"({period_s:g} s each; the run's audio is held in memory)")


@dataclass(frozen=True)
class OnsetLatency:
    onset_s: float  # media time of the onset in the sent audio
    injected_delay_ms: float  # how much later than its stamp this burst really started
    to_rtp_ms: float  # onset -> first RTP packet of the first open-mouth frame; nan if none found
    to_decoded_ms: float  # onset -> that frame decoded
    facemesh_to_decoded_ms: float  # the same, with FaceMesh deciding "open"


@dataclass(frozen=True)
class LatencyRun:
    onsets: list[OnsetLatency]
    first_frame_ms: float  # POST -> first video frame decoded
    stage_means_ms: dict[str, float]  # from the server's /metrics over the run
    detector_agreement: float  # fraction of analysed frames where detector and FaceMesh agree
    server_frames: dict[str, float]  # rendered/skipped/late during the run: skipped or late frames
    # repeat an image, so a mouth may open late or never: figures of such a run are not the server's

    @property
    def skipped_fraction(self) -> float:
        return not_in_time_fraction(self.server_frames)


def not_in_time_fraction(server_frames: dict[str, float]) -> float:
    """Frames the server did not render in time (skipped or late), of all it made.

    A skipped frame can also be late (its no-render step queued behind other sessions' renders),
    and the counters cannot tell how many were both: their sum counts those twice, so it is
    capped at the frames made (a run where every frame was behind reads 100%, not more).
    """
    made = server_frames.get("rendered", 0) + server_frames.get("skipped", 0)
    behind = server_frames.get("skipped", 0) + server_frames.get("late", 0)
    return min(behind, made) / made if made else math.nan


def voiced_burst(seconds: float) -> np.ndarray:
    """A held vowel stand-in: harmonics of a low f0, ramped at both ends (16 kHz float32)."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * k * BURST_F0_HZ * t) / k for k in range(1, BURST_HARMONICS + 1))
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / BURST_RAMP_S)
    return np.asarray(BURST_PEAK * voice / np.abs(voice).max() * ramp, np.float32)


def onset_schedule(config: LatencyConfig) -> tuple[np.ndarray, list[int]]:
    """The audio to send and the chunk index at which each burst starts (chunk-aligned)."""
    def chunks(seconds: float) -> int:
        return round(seconds * SAMPLE_RATE / AUDIO_CHUNK_SAMPLES)

    lead, period = chunks(config.lead_s), chunks(config.burst_s + config.gap_s)
    starts = [lead + i * period for i in range(config.onsets)]
    pcm = np.zeros((starts[-1] + period + chunks(config.tail_s)) * AUDIO_CHUNK_SAMPLES, np.float32)
    burst = voiced_burst(config.burst_s)
    for i, start in enumerate(starts):
        at = start * AUDIO_CHUNK_SAMPLES + round(injected_delay_s(config, i) * SAMPLE_RATE)
        pcm[at : at + burst.size] = burst
    return pcm, starts


def injected_delay_s(config: LatencyConfig, onset: int) -> float:
    return config.inject_delay_s if onset % 2 else 0.0


async def run_session(url: str, config: LatencyConfig,
                      token: str | None = None) -> tuple[Publisher, SpeechTrack, list[int], str, str]:
    """Publish the bursts in real time; returns what was received and /metrics before and after.

    A server that cannot be reached, refuses the session or sends no video is a `ServerError`.
    """
    pcm, starts = onset_schedule(config)
    track = SpeechTrack(pcm)
    publisher = Publisher(url, pcm, token=token, track=track, keep_size=config.frame_size, keep_audio=False)
    with reaching(url):
        async with aiohttp.ClientSession() as http:
            await publisher.start(http)
            try:
                await connected(publisher, url)
                await asyncio.sleep(config.lead_s * SETTLED_FRACTION)
                before = await scrape(http, url)  # start-up (first frames, encoder warm-up) left out
                await received_until(publisher, pcm.size / SAMPLE_RATE)
                if not publisher.received.video_pts:
                    raise ServerError(f"{url} sent no video in {pcm.size / SAMPLE_RATE + LATE_LIMIT_S:.0f} s")
            finally:
                await publisher.stop(http)
            after = await scrape(http, url)
    return publisher, track, starts, before, after


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """aiohttp's errors on the way to the server at `url` as one line a user can act on."""
    try:
        yield
    except aiohttp.ClientError as exc:
        raise ServerError(f"cannot reach {url}: {exc}") from exc


async def connected(publisher: Publisher, url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Wait for the session's media connection. Not `asyncio.wait_for`: on Python 3.11 it loses a
    cancellation (a Ctrl-C) that comes as the connection does, and the run went on with it. A
    cancellation lost that way before this wait (aiortc and aioice use it) is still pending on the
    task: honoured here, where the run waited 30 s for a server the same Ctrl-C had stopped."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    waiting = asyncio.ensure_future(publisher.connected.wait())
    try:
        done, _ = await asyncio.wait({waiting}, timeout=timeout_s)
    finally:
        waiting.cancel()
    if not done:
        raise ServerError(f"{url} answered, but no media connection came up within "
                          f"{timeout_s:.0f} s (UDP blocked between here and the server?)")


async def received_until(publisher: Publisher, media_s: float) -> None:
    """Wait until video of media time `media_s` has been decoded (a server running behind on a
    busy machine delivers the last bursts late), or up to `LATE_LIMIT_S` past it."""
    deadline = time.monotonic() + media_s + LATE_LIMIT_S
    pts = publisher.received.video_pts
    while time.monotonic() < deadline and not (pts and pts[-1] >= media_s * VIDEO_CLOCK_RATE):
        await asyncio.sleep(FRAME_S)


def rtp_arrivals_of_decoded(received: Reception) -> np.ndarray:
    """For each decoded frame, when its first RTP packet arrived (nan if not recorded).

    aiortc's decoded pts is the RTP timestamp minus that of the first frame it output, which is
    the first to arrive (a keyframe).
    """
    arrivals = received.rtp_arrival["video"]
    if not arrivals:
        return np.full(len(received.video_pts), math.nan)
    first = min(arrivals, key=arrivals.__getitem__)
    return np.array([arrivals.get((first + pts) % RTP_WRAP, math.nan) for pts in received.video_pts])


def first_open_after(onset_t: float, window_s: float, times: np.ndarray,
                     open_: Sequence[bool | None]) -> int | None:
    """Index of the first frame arriving within `window_s` after the onset whose mouth is open,
    if the mouth was at rest when the onset was sent (else the onset says nothing)."""
    after = np.flatnonzero((times > onset_t) & (times < onset_t + window_s))
    if after.size == 0 or (after[0] > 0 and open_[after[0] - 1]):
        return None
    return next((int(i) for i in after if open_[i]), None)


def measure_onsets(publisher: Publisher, track: SpeechTrack, starts: list[int], config: LatencyConfig,
                   detector: MouthOpenDetector) -> tuple[list[OnsetLatency], float]:
    """Per onset its latencies; and how often FaceMesh agrees with the detector."""
    received = publisher.received
    decoded, rtp = np.asarray(received.video_arrival), rtp_arrivals_of_decoded(received)
    detected = [detector.is_open(image) for image in received.images]
    meshed = [detector.facemesh_open(image) for image in received.images]
    window_s = config.burst_s + config.gap_s  # an onset's frames are searched up to the next onset
    rows = []
    for n, start in enumerate(starts[: len(track.handed_at)]):
        onset_t = track.handed_at[start]
        i = first_open_after(onset_t, window_s, rtp, detected)
        j = first_open_after(onset_t, window_s, decoded, meshed)
        rows.append(OnsetLatency(
            round(start * AUDIO_CHUNK_SAMPLES / SAMPLE_RATE, 3), injected_delay_s(config, n) * 1000,
            _ms(rtp[i] - onset_t) if i is not None else math.nan,
            _ms(decoded[i] - onset_t) if i is not None else math.nan,
            _ms(decoded[j] - onset_t) if j is not None else math.nan))
    return rows, agreement(detected, meshed)


def agreement(detected: Sequence[bool], meshed: Sequence[bool | None]) -> float:
    """Fraction of frames (where FaceMesh found a face) on which the two verdicts match."""
    known = [(d, m) for d, m in zip(detected, meshed, strict=True) if m is not None]
    return sum(d == m for d, m in known) / max(len(known), 1)


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1000, 1)


def measure_latency(url: str, config: LatencyConfig | None = None, avatar: Avatar | None = None,
                    token: str | None = None) -> LatencyRun:
    """One measuring session against the server at `url` (its default avatar unless given)."""
    config = config or LatencyConfig()
    detector = MouthOpenDetector(avatar or Avatar.default(), config.frame_size)
    return asyncio.run(measure(url, config, detector, token))


async def measure(url: str, config: LatencyConfig, detector: MouthOpenDetector,
                  token: str | None = None) -> LatencyRun:
    publisher, track, starts, before, after = await run_session(url, config, token)
    onsets, agreement = measure_onsets(publisher, track, starts, config, detector)
    frames = {k: v - frame_counts(before).get(k, 0) for k, v in frame_counts(after).items()}
    return LatencyRun(onsets, first_frame_ms(publisher), round_values(stage_means_ms(before, after)),
                      round(agreement, 3), frames)


def first_frame_ms(publisher: Publisher) -> float:
    """POST -> first video frame decoded."""
    arrivals = publisher.received.video_arrival
    if not arrivals or publisher.posted_at is None:
        return math.nan
    return _ms(arrivals[0] - publisher.posted_at)


def round_values(ms: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in ms.items()}
