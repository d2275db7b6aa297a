"""A session: one peer's speech in, the avatar's video and delayed audio out, plus its viewers.

It owns an aiortc peer connection, the task that drains inbound audio into the `AudioInbox`, the
`FrameProducer`, a watchdog, and the viewers' peer connections. It ends on `close(reason)`, which
every exit path calls (DELETE, peer closed or failed, connect or transport timeout, maximum
duration); close cancels and awaits every task, closes every peer connection, drops the engine,
always reaches `on_end` (even when aiortc raises while closing), and is safe to call twice.

Liveness comes from the transport, not the voice: a caller who stops talking, mutes or ends the
microphone keeps an idling avatar until DELETE, until nothing at all has arrived for
`transport_timeout_s`, or until ICE fails.
"""

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from lipstream.streaming.clock import Clock, MediaClock
from lipstream.streaming.codecs import audio_preferences, video_preferences
from lipstream.streaming.controlstream import ControlStream
from lipstream.streaming.encoders import VP8
from lipstream.streaming.inbox import AudioInbox, InboxConfig, InboxStats
from lipstream.streaming.jitterbuffer import JitterConfig
from lipstream.streaming.liveness import on_every_datagram
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.offer import parse_offer, with_opus_dtx_and_fec
from lipstream.streaming.rtpaudio import OpusReceiver
from lipstream.streaming.ssrcs import MAX_PEER_SSRCS, on_ssrc_churn
from lipstream.streaming.tracks import SessionAudioTrack, SessionVideoTrack, SyncProbe
from lipstream.streaming.worker import FrameEngine, FrameProducer, FrameRing, ProducerConfig, RenderPool

log = logging.getLogger(__name__)

CHURNED = "session %s: %s sent from more than %d SSRCs, which no real peer does: its connection ends"
WATCH_PERIOD_S = 0.25  # how often the watchdog looks at timeouts and exports inbox counters


@dataclass(frozen=True)
class SessionConfig:
    connect_timeout_s: float = 15.0  # ICE + DTLS must be up this soon after the session is made
    # Nothing at all (RTP, RTCP, STUN, DTLS) from the peer for this long: it is gone. Live peers
    # send STUN consent checks at least every 5 s even with no media.
    transport_timeout_s: float = 10.0
    max_duration_s: float | None = None  # a session ends with reason "max_duration"; None: no limit
    ring_ms: int = 240  # frames kept for the tracks and viewers to read
    max_viewers: int = 8
    video_codec: str = VP8  # what video is sent in when offered (encoders.py); set by create_app
    inbox: InboxConfig = field(default_factory=InboxConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    jitter: JitterConfig = field(default_factory=JitterConfig)


class SessionEnded(Exception):
    """The session ended while a request for it was being served."""


def new_peer_connection() -> RTCPeerConnection:
    # An empty list: with none given aiortc adds a public STUN server (no internet here).
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def answer_offer(pc: RTCPeerConnection, offer_sdp: str, tracks: list[MediaStreamTrack],
                       video_codec: str) -> str:
    """Apply the offer, attach our tracks to the offered m-lines of their kind, gather, answer.

    Video is answered sendonly whatever was offered: aiortc would otherwise decode inbound video
    into a queue nobody reads (~18 MB/s at 640x640). It is sent in `video_codec` when the offer
    has it, else in the other codec: aiortc negotiates codecs inside setRemoteDescription, so the
    preference goes on a video transceiver made before it, which the offer's video m-line takes.
    Audio is answered in Opus alone, the same way, when offered (a transceiver that no m-line takes
    would break the answer).
    """
    pc.addTransceiver("video", direction="sendonly").setCodecPreferences(video_preferences(video_codec))
    if parse_offer(offer_sdp).of_kind("audio"):
        pc.addTransceiver("audio", direction="recvonly").setCodecPreferences(audio_preferences())
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    offered = {t.kind for t in pc.getTransceivers() if t.mid is not None}
    for track in tracks:
        if track.kind in offered:
            pc.addTrack(track)
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.direction = "sendonly"
    await pc.setLocalDescription(await pc.createAnswer())
    # After setLocalDescription every candidate is gathered and in the description (no trickle).
    return with_opus_dtx_and_fec(str(pc.localDescription.sdp))


async def close_quietly(pc: RTCPeerConnection) -> None:
    """Close a peer connection; aiortc can raise here after a failed setRemoteDescription."""
    try:
        await pc.close()
    except Exception as exc:  # teardown must go on whatever aiortc raises
        log.debug("closing a peer connection raised %r", exc)


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
        # the publisher's own control stream, if it opens one
        self.controls = ControlStream(metrics.control_messages_dropped)
        self.video = SessionVideoTrack(self.ring, self.media, metrics, start_index=0, probe=self.probe,
                                       controls=self.controls)
        self.audio = SessionAudioTrack(self.ring, self.media, start_index=0, probe=self.probe,
                                       video=self.video)
        self.producer = FrameProducer(engine, self.inbox, self.media, pool, self.ring, metrics,
                                      self.config.producer)
        self.pc = new_peer_connection()
        self.viewers: dict[str, RTCPeerConnection] = {}
        self._viewer_heard_at: dict[str, float] = {}  # session clock: last datagram from each viewer
        self.end_reason: str | None = None
        self.ended = asyncio.Event()
        self._created = self._heard_at = clock.now()
        self._closer: asyncio.Task[None] | None = None
        self._exported = InboxStats()  # the inbox's counts already in the metrics
        metrics.sessions.inc()
        metrics.sessions_started.inc()
        # From creation, not from a successful answer: a session that never answers still ends.
        self._tasks: list[asyncio.Task[object]] = [
            asyncio.create_task(self._watch(), name=f"watch-{self.id}")]

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer to the publisher's offer (audio to send us, video to receive)."""
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self.controls.offer)
        answer = await answer_offer(self.pc, offer_sdp, [self.audio, self.video], self.config.video_codec)
        if self.ending:  # closed meanwhile (server shutdown): start no task that nothing would cancel
            raise SessionEnded
        on_every_datagram(self.pc, self._heard)
        on_ssrc_churn(self.pc, MAX_PEER_SSRCS, self._publisher_churned)
        self._tasks.append(asyncio.create_task(self.producer.run(), name=f"produce-{self.id}"))
        return answer

    async def add_viewer(self, offer_sdp: str) -> tuple[str, str]:
        """Answer a viewer's recvonly offer with this session's video and audio -> (id, answer).

        Raises SessionEnded when the session ends before or while the viewer is set up.
        """
        if self.ending:
            raise SessionEnded
        viewer_id, pc = secrets.token_urlsafe(8), new_peer_connection()
        self.viewers[viewer_id] = pc
        self._viewer_heard_at[viewer_id] = self.media.now()
        self.metrics.viewers.inc()
        pc.on("connectionstatechange", lambda: self._on_viewer_state(viewer_id))
        # a viewer that draws the face itself reads the controls too
        controls = ControlStream(self.metrics.control_messages_dropped)
        pc.on("datachannel", controls.offer)
        try:
            answer = await answer_offer(pc, offer_sdp, self._viewer_tracks(controls), self.config.video_codec)
        except Exception:
            await self.remove_viewer(viewer_id)
            if self.ending:  # closing the session closed this pc under aiortc's feet
                raise SessionEnded from None
            raise
        except BaseException:
            await self.remove_viewer(viewer_id)
            raise
        if self.ending or viewer_id not in self.viewers:  # the session ended meanwhile
            await self.remove_viewer(viewer_id)
            raise SessionEnded
        on_every_datagram(pc, lambda: self._viewer_heard(viewer_id))
        on_ssrc_churn(pc, MAX_PEER_SSRCS, lambda: self._viewer_churned(viewer_id))
        return viewer_id, answer

    def _publisher_churned(self) -> None:
        """The publisher sent from more SSRCs than a real peer uses (ssrcs.py)."""
        log.warning(CHURNED, self.id, "the publisher", MAX_PEER_SSRCS)
        self.end("ssrc_churn")

    def _viewer_churned(self, viewer_id: str) -> None:
        log.warning(CHURNED, self.id, f"viewer {viewer_id}", MAX_PEER_SSRCS)
        if not self.ending:  # else closing the session removes it
            self._tasks.append(asyncio.create_task(self.remove_viewer(viewer_id), name=f"drop-{viewer_id}"))

    def _viewer_tracks(self, controls: ControlStream) -> list[MediaStreamTrack]:
        video = SessionVideoTrack(self.ring, self.media, start_index=None, controls=controls)
        return [video, SessionAudioTrack(self.ring, self.media, start_index=None, video=video)]

    def _viewer_heard(self, viewer_id: str) -> None:
        if viewer_id in self._viewer_heard_at:
            self._viewer_heard_at[viewer_id] = self.media.now()

    async def _on_viewer_state(self, viewer_id: str) -> None:
        pc = self.viewers.get(viewer_id)
        if pc is not None and pc.connectionState in ("failed", "closed"):
            await self.remove_viewer(viewer_id)

    async def remove_viewer(self, viewer_id: str) -> bool:
        pc = self.viewers.pop(viewer_id, None)
        self._viewer_heard_at.pop(viewer_id, None)
        if pc is None:
            return False
        self.metrics.viewers.dec()
        await close_quietly(pc)
        return True

    @property
    def age_s(self) -> float:
        return self.media.now() - self._created

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
        try:
            await self._release()
        finally:  # whatever raised above, the slot is given back and the end recorded
            self.metrics.sessions.dec()
            self.metrics.sessions_ended.labels(reason).inc()
            if self.on_end is not None:
                self.on_end(self)
            self.ended.set()

    async def _release(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for viewer_id in list(self.viewers):
            await self.remove_viewer(viewer_id)
        self.video.stop()
        self.audio.stop()
        await close_quietly(self.pc)
        self.producer.release()  # the engine's buffers and renderer go now, not when we are collected
        self._export_inbox()

    def _heard(self) -> None:
        self._heard_at = self.media.now()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            track.stop()  # never decoded (answered sendonly); stopped in case a peer sends anyway
        if track.kind != "audio" or self.ending:  # a late event must not outlive the session
            return
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track:
                receiver = OpusReceiver(self.inbox, self.media, self.metrics, self.config.jitter)
                receiver.attach(transceiver.receiver)  # before the first packet: this is setRemote
                self._tasks.append(asyncio.create_task(receiver.run(), name=f"receive-{self.id}"))

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.media.start(lead_s=self.config.producer.start_lead_ms / 1000)
        elif state in ("failed", "closed"):
            self.end(f"peer_{state}")

    async def _watch(self) -> None:
        while True:
            await self.media.sleep_until(self.media.now() + WATCH_PERIOD_S)
            self._export_inbox()
            reason = self._timed_out(self.media.now())
            if reason is not None:
                self.end(reason)
                return
            await self._drop_silent_viewers()

    def _timed_out(self, now: float) -> str | None:
        """Why the session must end now, if it must."""
        config = self.config
        if config.max_duration_s is not None and now - self._created > config.max_duration_s:
            return "max_duration"
        if not self.media.started:
            return "connect_timeout" if now - self._created > config.connect_timeout_s else None
        return "transport_timeout" if now - self._heard_at > config.transport_timeout_s else None

    async def _drop_silent_viewers(self) -> None:
        """A viewer that vanished without DELETE stops costing an encoder within the timeout."""
        deadline = self.media.now() - self.config.transport_timeout_s
        for viewer_id, heard_at in list(self._viewer_heard_at.items()):
            if heard_at < deadline:
                await self.remove_viewer(viewer_id)

    def _export_inbox(self) -> None:
        now = replace(self.inbox.stats)  # a copy: the inbox goes on counting in its own
        self.metrics.count_inbox(now, self._exported)
        self._exported = now

