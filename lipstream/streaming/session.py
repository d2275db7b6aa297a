"""A session: one peer's speech in, the avatar's video and delayed audio out, plus its viewers.

It owns an aiortc peer connection, the task that drains inbound audio into the `AudioInbox`, the
`FrameProducer`, a watchdog, and the viewers' peer connections. It ends on `close(reason)`, which
every exit path calls (DELETE, peer closed or failed, connect or idle timeout); close cancels and
awaits every task, closes every peer connection, drops the engine, and is safe to call twice.
"""

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.clock import Clock, MediaClock
from lipstream.streaming.inbox import AudioInbox, InboxConfig
from lipstream.streaming.jitterbuffer import JitterConfig
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.rtpaudio import OpusReceiver, request_fec_and_dtx
from lipstream.streaming.tracks import SessionAudioTrack, SessionVideoTrack, SyncProbe
from lipstream.streaming.worker import FrameEngine, FrameProducer, FrameRing, ProducerConfig, RenderPool

WATCH_PERIOD_S = 0.25  # how often the watchdog looks at timeouts and exports inbox counters


@dataclass(frozen=True)
class SessionConfig:
    connect_timeout_s: float = 15.0  # ICE + DTLS must be up this soon after the answer
    idle_timeout_s: float = 3.0  # no inbound audio packet for this long: the peer is gone
    ring_ms: int = 240  # frames kept for the tracks and viewers to read
    max_viewers: int = 8
    inbox: InboxConfig = field(default_factory=InboxConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    jitter: JitterConfig = field(default_factory=JitterConfig)


def new_peer_connection() -> RTCPeerConnection:
    # An empty list: with none given aiortc adds a public STUN server (no internet here).
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def answer_offer(pc: RTCPeerConnection, offer_sdp: str, tracks: list[MediaStreamTrack]) -> str:
    """Apply the offer, attach our tracks to the offered m-lines of their kind, gather, answer."""
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    request_fec_and_dtx(pc)
    offered = {t.kind for t in pc.getTransceivers()}
    for track in tracks:
        if track.kind in offered:
            pc.addTrack(track)
    await pc.setLocalDescription(await pc.createAnswer())
    # After setLocalDescription every candidate is gathered and in the description (no trickle).
    return str(pc.localDescription.sdp)


class Session:
    def __init__(self, engine: FrameEngine, pool: RenderPool, metrics: ServerMetrics, clock: Clock,
                 config: SessionConfig | None = None,
                 on_end: Callable[["Session"], None] | None = None) -> None:
        self.id = secrets.token_urlsafe(12)
        self.config = config or SessionConfig()
        self.metrics, self.on_end = metrics, on_end
        self.media = MediaClock(clock)
        self.inbox = AudioInbox(self.config.inbox)
        self.ring = FrameRing(self.media, self.config.ring_ms)
        self.probe = SyncProbe(metrics)
        self.video = SessionVideoTrack(self.ring, self.media, metrics, start_index=0, probe=self.probe)
        self.audio = SessionAudioTrack(self.ring, self.media, start_index=0, probe=self.probe,
                                       video=self.video)
        self.producer = FrameProducer(engine, self.inbox, self.media, pool, self.ring, metrics,
                                      self.config.producer)
        self.pc = new_peer_connection()
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.end_reason: str | None = None
        self.ended = asyncio.Event()
        self._created = clock.now()
        self._last_packet: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closer: asyncio.Task[None] | None = None
        self._exported = (0, 0)  # inbox (underruns, dropped samples) already counted
        metrics.sessions.inc()
        metrics.sessions_started.inc()

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer to the publisher's offer (audio to send us, video to receive)."""
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        answer = await answer_offer(self.pc, offer_sdp, [self.audio, self.video])
        self._tasks += [asyncio.create_task(self.producer.run(), name=f"produce-{self.id}"),
                        asyncio.create_task(self._watch(), name=f"watch-{self.id}")]
        return answer

    async def add_viewer(self, offer_sdp: str) -> tuple[str, str]:
        """Answer a viewer's recvonly offer with this session's video and audio -> (id, answer)."""
        viewer_id = secrets.token_urlsafe(8)
        pc = new_peer_connection()
        self.viewers[viewer_id] = pc
        self.metrics.viewers.inc()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.remove_viewer(viewer_id)

        video = SessionVideoTrack(self.ring, self.media, start_index=None)
        tracks: list[MediaStreamTrack] = [video, SessionAudioTrack(self.ring, self.media, start_index=None,
                                                                   video=video)]
        try:
            return viewer_id, await answer_offer(pc, offer_sdp, tracks)
        except BaseException:
            await self.remove_viewer(viewer_id)
            raise

    async def remove_viewer(self, viewer_id: str) -> bool:
        pc = self.viewers.pop(viewer_id, None)
        if pc is None:
            return False
        self.metrics.viewers.dec()
        await pc.close()
        return True

    @property
    def ending(self) -> bool:
        return self._closer is not None

    def end(self, reason: str) -> None:
        """Start closing from a callback that must not wait (event handlers, the watchdog)."""
        if self._closer is None:
            self._closer = asyncio.create_task(self._close(reason), name=f"close-{self.id}")

    async def close(self, reason: str) -> None:
        self.end(reason)
        assert self._closer is not None
        await asyncio.shield(self._closer)

    async def _close(self, reason: str) -> None:
        self.end_reason = reason
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for viewer_id in list(self.viewers):
            await self.remove_viewer(viewer_id)
        self.video.stop()
        self.audio.stop()
        await self.pc.close()
        self.producer.release()  # the engine's buffers and renderer go now, not when we are collected
        self._export_inbox()
        self.metrics.sessions.dec()
        self.metrics.sessions_ended.labels(reason).inc()
        if self.on_end is not None:
            self.on_end(self)
        self.ended.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.ending:  # a late event must not outlive the session
            return
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                receiver = OpusReceiver(self.inbox, self.media, self.metrics, self.config.jitter,
                                        on_packet=self._heard)
                receiver.attach(transceiver.receiver)  # before the first packet: this is setRemote
                self._tasks.append(asyncio.create_task(receiver.run(), name=f"receive-{self.id}"))

    def _heard(self, now_s: float) -> None:
        self._last_packet = now_s

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.media.start(lead_s=self.config.producer.lead_ms / 1000)
        elif state in ("failed", "closed"):
            self.end(f"peer_{state}")

    async def _watch(self) -> None:
        while True:
            await self.media.sleep_until(self.media.now() + WATCH_PERIOD_S)
            self._export_inbox()
            now = self.media.now()
            if not self.media.started and now - self._created > self.config.connect_timeout_s:
                self.end("connect_timeout")
            last = self._idle_since()
            if last is not None and now - last > self.config.idle_timeout_s:
                self.end("idle_timeout")

    def _idle_since(self) -> float | None:
        """The last inbound packet, or media start if none came yet; None before connecting."""
        if self._last_packet is not None:
            return self._last_packet
        return self.media.origin if self.media.started else None

    def _export_inbox(self) -> None:
        underruns, dropped = self.inbox.stats.underruns, self.inbox.stats.dropped_samples
        self.metrics.input_underruns.inc(underruns - self._exported[0])
        self.metrics.input_dropped_seconds.inc((dropped - self._exported[1]) / SAMPLE_RATE)
        self._exported = (underruns, dropped)

