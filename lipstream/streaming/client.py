"""A Python publisher for `lipstream serve`: sends speech, receives the avatar, records timing.

It is what a browser does (WHIP POST, audio out, video and audio back), used by the tests and
`benchmarks/sessions.py`. Besides the decoded media it records when each RTP packet arrived,
before aiortc's receive jitter buffers (80 ms for audio, one frame for video) hold it: those
arrival times are what a receiver synchronising by RTP/RTCP timestamps would work with.
"""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import ServerError
from lipstream.streaming.clock import AUDIO_CHUNK_MS, AUDIO_CHUNK_SAMPLES
from lipstream.streaming.controlstream import CONTROL_CHANNEL_LABEL
from lipstream.streaming.guards import VIEWER_TOKEN_HEADER
from lipstream.streaming.session import new_peer_connection

OPUS_CLOCK_RATE = 48_000  # RTP clock of Opus, whatever rate was encoded


class PcmTrack(MediaStreamTrack):
    """A microphone stand-in: plays `pcm` (16 kHz float32) at real time, then silence forever."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__()
        self.pcm = np.clip(pcm, -1, 1)
        self._chunk = 0
        self._origin: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._origin is None:
            self._origin = time.monotonic()
        delay = self._origin + self._chunk * AUDIO_CHUNK_MS / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        start = self._chunk * AUDIO_CHUNK_SAMPLES
        piece = np.zeros(AUDIO_CHUNK_SAMPLES, np.float32)
        part = self.pcm[start : start + AUDIO_CHUNK_SAMPLES]
        piece[: part.size] = part
        frame = av.AudioFrame.from_ndarray((piece * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        self._chunk += 1
        return frame


@dataclass
class Reception:
    """What came back. Times are time.monotonic() seconds."""

    video_pts: list[int] = field(default_factory=list)  # RTP timestamps, 90 kHz
    video_arrival: list[float] = field(default_factory=list)  # when the decoded frame came out
    # By then, how long the event loop's thread had waited, in all, for the OS to give it a CPU:
    # a frame gap that this wait explains was a busy machine, not a stalled stream.
    video_cpu_wait: list[float] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # kept if keep_size, (s, s, 3) RGB
    audio_pts: list[int] = field(default_factory=list)  # RTP timestamps, 48 kHz
    audio: list[np.ndarray] = field(default_factory=list)  # decoded, mono float32 at 48 kHz
    rtp_arrival: dict[str, dict[int, float]] = field(
        default_factory=lambda: {"audio": {}, "video": {}})  # RTP timestamp -> first packet arrival


class Publisher:
    def __init__(self, base_url: str, pcm: np.ndarray, token: str | None = None,
                 avatar: str | None = None, keep_size: int | None = None,
                 video_codec: str | None = None, track: MediaStreamTrack | None = None,
                 keep_audio: bool = True, controls: bool = False) -> None:
        self.base_url, self.token, self.avatar = base_url.rstrip("/"), token, avatar
        self.video_codec = video_codec  # e.g. "video/H264" to offer only that (as OBS does)
        self.keep_size = keep_size
        self.pc: RTCPeerConnection = new_peer_connection()
        self.track = track if track is not None else PcmTrack(pcm)  # another sender, e.g. looping
        self.keep_audio = keep_audio  # False: count audio RTP arrivals only (hours-long runs)
        self.received = Reception()
        self.location: str | None = None
        self.viewer_token: str | None = None  # for watching this session only (a server with a token)
        self.posted_at: float | None = None  # time.monotonic() when the offer was POSTed
        self.connected = asyncio.Event()
        self.controls = controls  # open the control stream (controlstream.py) and keep its messages
        self.control_messages: list[dict[str, Any]] = []  # decoded JSON, in arrival order
        self._tasks: list[asyncio.Task[None]] = []

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return headers | ({"Content-Type": content_type} if content_type else {})

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Offer audio sendrecv + video recvonly, POST it, apply the answer."""
        self.pc.addTransceiver(self.track, direction="sendrecv")
        video = self.pc.addTransceiver("video", direction="recvonly")
        if self.controls:
            channel = self.pc.createDataChannel(CONTROL_CHANNEL_LABEL)
            channel.on("message", lambda text: self.control_messages.append(json.loads(text)))
        if self.video_codec is not None:
            capabilities = RTCRtpReceiver.getCapabilities("video")
            assert capabilities is not None
            video.setCodecPreferences([c for c in capabilities.codecs if c.mimeType == self.video_codec])
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for transceiver in self.pc.getTransceivers():
            _record_rtp_arrivals(transceiver.receiver, transceiver.kind, self.received)
        query = f"?avatar={self.avatar}" if self.avatar else ""
        self.posted_at = time.monotonic()
        async with http.post(f"{self.base_url}/v1/sessions{query}", data=self.pc.localDescription.sdp,
                             headers=self._headers("application/sdp")) as response:
            if response.status != 201:
                raise ServerError(f"{self.base_url} refused the session: {await refusal(response)}")
            self.location = response.headers["Location"]
            self.viewer_token = response.headers.get(VIEWER_TOKEN_HEADER)
            answer = await response.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def stop(self, http: aiohttp.ClientSession | None = None) -> None:
        """DELETE the session (if given a client) and close the peer connection.

        A server that cannot be reached any more took the session with it: nothing to end there
        (Ctrl-C in a terminal stops a spawned server with its client).
        """
        if http is not None and self.location is not None:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.delete(self.base_url + self.location, headers=self._headers()):
                    pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()

    async def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        drain = self._drain_video if track.kind == "video" else self._drain_audio
        self._tasks.append(asyncio.create_task(drain(track)))

    async def _drain_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame) and frame.pts is not None
            self.received.video_arrival.append(time.monotonic())
            self.received.video_cpu_wait.append(cpu_wait_s())
            self.received.video_pts.append(frame.pts)
            if self.keep_size:
                image = frame.to_ndarray(format="rgb24")
                self.received.images.append(cv2.resize(image, (self.keep_size, self.keep_size),
                                                       interpolation=cv2.INTER_AREA))

    async def _drain_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame) and frame.pts is not None
            if not self.keep_audio:
                continue
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            self.received.audio_pts.append(frame.pts)
            self.received.audio.append((pcm / 32768.0).astype(np.float32))


async def refusal(response: aiohttp.ClientResponse) -> str:
    """What a server that refused says: its JSON error, else the status line."""
    with contextlib.suppress(aiohttp.ContentTypeError, ValueError):
        body = await response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return f"{response.status} {body['error']}"
    return f"{response.status} {response.reason}"


def cpu_wait_s() -> float:
    """Seconds the calling thread has spent ready to run but waiting for a CPU (Linux; else 0)."""
    try:
        with open("/proc/thread-self/schedstat") as stats:
            return int(stats.read().split()[1]) / 1e9  # run time, run-queue wait, slices (ns)
    except (OSError, IndexError, ValueError):
        return 0.0


def _record_rtp_arrivals(receiver: RTCRtpReceiver, kind: str, into: Reception) -> None:
    """Note when the first packet of each RTP timestamp arrives, ahead of the jitter buffer."""
    handle = receiver._handle_rtp_packet
    arrivals = into.rtp_arrival[kind]

    async def handle_and_record(packet: RtpPacket, arrival_time_ms: int) -> None:
        arrivals.setdefault(packet.timestamp, time.monotonic())
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_and_record  # type: ignore[method-assign]


def _relative_rtp(arrivals: dict[int, float], clock_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RTP timestamp -> seconds since the first packet (unwrapped, like aiortc's decoded pts)."""
    items = sorted(arrivals.items(), key=lambda kv: kv[1])
    stamps = np.array([ts for ts, _ in items], np.int64)
    deltas = (np.diff(stamps) + 2**31) % 2**32 - 2**31  # modular: survives the 32-bit wrap
    media_s = np.concatenate([[0], np.cumsum(deltas)]) / clock_rate
    return media_s, np.array([t for _, t in items])


def fps_and_max_gap(arrivals: list[float]) -> tuple[float, float]:
    """Average frames per second and the longest pause between two frames, from arrival times."""
    t = np.asarray(arrivals)
    return (t.size - 1) / (t[-1] - t[0]), float(np.diff(t).max())


def realtime_fps(received: Reception) -> float:
    """Media frames per wall-clock second, from a line fitted to arrival vs media time: 25 when
    the stream keeps up with real time (one late frame at either end barely moves it)."""
    media_s = np.asarray(received.video_pts) / 90_000
    return float(25 / np.polyfit(media_s, np.asarray(received.video_arrival), 1)[0])


def transport_offsets_s(received: Reception, skip_s: float = 1.0) -> np.ndarray:
    """Per video frame: its arrival minus the arrival of the audio with the same media time.

    Positive: the picture arrives after its sound. Both streams start at media time 0 on the
    server (frame 0 and chunk 0 leave together), and each receiver-side origin is its first packet.
    """
    return transport_offsets_timed(received, skip_s)[1]


def transport_offsets_timed(received: Reception, skip_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`transport_offsets_s` with the arrival time of each video frame: (arrivals, offsets) in s."""
    video_m, video_t = _relative_rtp(received.rtp_arrival["video"], 90_000)
    audio_m, audio_t = _relative_rtp(received.rtp_arrival["audio"], OPUS_CLOCK_RATE)
    keep = (video_m >= skip_s) & (video_m <= audio_m[-1])  # start-up settled, audio present
    return video_t[keep], np.asarray(video_t[keep] - np.interp(video_m[keep], audio_m, audio_t))


def received_audio(received: Reception) -> tuple[np.ndarray, int]:
    """The decoded audio as one array placed by pts (gaps zero-filled) and its rate."""
    total = received.audio_pts[-1] + received.audio[-1].size
    out = np.zeros(total, np.float32)
    for pts, pcm in zip(received.audio_pts, received.audio, strict=True):
        out[pts : pts + pcm.size] = pcm
    return out, OPUS_CLOCK_RATE
