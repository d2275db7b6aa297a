"""Session lifecycle against a real server and real aiortc peers on loopback: every slot is given
back, liveness comes from the transport (not the voice), video is never received, viewers never
outlive their session."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from fractions import Fraction

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from lipstream.engine.avatar import Avatar
from lipstream.engine.engine import Engine
from lipstream.streaming.client import PcmTrack, Publisher
from lipstream.streaming.clock import MonotonicClock
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.server import ServeConfig
from lipstream.streaming.session import Session, SessionConfig, SessionEnded, new_peer_connection
from lipstream.streaming.worker import RenderPool
from tests.serving import (
    SDP,
    SILENCE,
    RunningServer,
    client_offer,
    publish,
    serving,
    still_streaming,
)

CONFIG = ServeConfig(max_sessions=2, loopback_ice=False)
OLD_AUDIO_IDLE_TIMEOUT_S = 3.0  # sessions used to die this long after the caller's audio stopped
VIDEO_SIZE_PX = 640


pytestmark = pytest.mark.usefixtures("loopback")


async def healthz(server: RunningServer, http: aiohttp.ClientSession) -> dict[str, int]:
    async with http.get(f"{server.url}/healthz") as response:
        body: dict[str, int] = await response.json()
        return body


def without_line(sdp: str, prefix: str, nth: int = 0) -> str:
    """The SDP without the nth line starting with `prefix`."""
    lines = sdp.split("\r\n")
    index = [i for i, line in enumerate(lines) if line.startswith(prefix)][nth]
    return "\r\n".join(lines[:index] + lines[index + 1:])


async def leaking_offers() -> list[str]:
    """Offers on which aiortc raises in setRemoteDescription, and again in close (found by trying)."""
    sdp = await client_offer("sendrecv", "recvonly")
    return [without_line(sdp, "a=mid:"), without_line(sdp, "m=audio"), without_line(sdp, "m=video")]


async def test_offers_aiortc_fails_on_get_400_json_and_leak_no_slot(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        for offer in await leaking_offers():
            async with http.post(f"{server.url}/v1/sessions", data=offer, headers=SDP) as response:
                assert response.status == 400, await response.text()
                assert response.content_type == "application/json"
                reason = (await response.json())["error"]
                assert reason and "NoneType" not in reason, reason
        assert (await healthz(server, http))["sessions"] == 0
        publishers = [await publish(server, http, SILENCE) for _ in range(2)]  # max_sessions=2
        assert all([await still_streaming(p) for p in publishers])
        for publisher in publishers:
            await publisher.stop(http)


async def test_a_session_aiortc_refuses_still_closes_and_is_forgotten(avatar: Avatar) -> None:
    """The close path itself: aiortc raises in setRemoteDescription and in close; close finishes."""
    metrics, forgotten = ServerMetrics(), []
    pool = RenderPool(1)
    try:
        session = Session(Engine(avatar), pool, metrics, MonotonicClock(), on_end=forgotten.append)
        with pytest.raises(Exception):  # noqa: B017  (aiortc's own internals; any type)
            await session.answer((await leaking_offers())[0])
        await asyncio.wait_for(session.close("bad_offer"), 5)
        assert forgotten == [session] and session.ended.is_set()
        assert 'lipstream_sessions 0.0' in metrics.render().decode()
    finally:
        pool.shutdown()


async def test_a_session_closed_while_it_answers_leaves_no_task_running(avatar: Avatar) -> None:
    """Server shutdown at each step of an answer: the answer fails and nothing keeps running."""
    pool = RenderPool(1)
    try:
        for steps in range(8):
            session = Session(Engine(avatar), pool, ServerMetrics(), MonotonicClock())
            answering = asyncio.ensure_future(session.answer(await client_offer("sendrecv", "recvonly")))
            for _ in range(steps):
                await asyncio.sleep(0)  # let the answer get that far
            await session.close("server_shutdown")
            with pytest.raises(Exception):  # noqa: B017  (SessionEnded, or aiortc's InvalidStateError)
                await answering
            await asyncio.sleep(0)
            assert all(task.done() for task in session._tasks), f"a task outlived the session ({steps})"
    finally:
        pool.shutdown()


async def test_an_offer_being_answered_when_the_server_closes_its_sessions_is_told_to_retry(
        avatar: Avatar) -> None:
    """Shutdown closes every session, including one still answering its offer: the offer was
    fine, so the answer is 503 with Retry-After (once 400, "the WebRTC stack could not use this
    SDP offer"), and the slot is free."""
    async with serving(CONFIG, avatar) as (server, http):
        async def post() -> tuple[int, str, dict[str, str]]:
            offer = await client_offer("sendrecv", "recvonly")
            async with http.post(f"{server.url}/v1/sessions", data=offer, headers=SDP) as response:
                return response.status, await response.text(), dict(response.headers)

        posting = asyncio.ensure_future(post())
        while not server.state.sessions:  # registered: it is answering now
            await asyncio.sleep(0)
        await asyncio.gather(*(s.close("server_shutdown") for s in list(server.state.sessions.values())))
        status, body, headers = await posting
        assert status == 503 and "shutting down" in body, body
        assert headers["Retry-After"] == str(CONFIG.retry_after_s)
        assert server.state.slots_in_use == 0


class EndingTrack(PcmTrack):
    """A microphone that ends (unplugged, permission revoked) after `after_s`."""

    def __init__(self, after_s: float) -> None:
        super().__init__(SILENCE)
        self.last_chunk = int(after_s * 50)

    async def recv(self) -> av.AudioFrame:
        if self._chunk >= self.last_chunk:
            raise MediaStreamError
        return await super().recv()


@pytest.mark.parametrize("how", ["track_ends", "replace_track_none"])
async def test_a_caller_whose_audio_stops_keeps_an_idling_avatar(avatar: Avatar, how: str) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        publisher = Publisher(server.url, SILENCE)
        if how == "track_ends":
            publisher.track = EndingTrack(after_s=0.5)
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        if how == "replace_track_none":
            publisher.pc.getSenders()[0].replaceTrack(None)
        await asyncio.sleep(2 * OLD_AUDIO_IDLE_TIMEOUT_S)
        assert len(server.state.sessions) == 1, "the session died with the caller's audio"
        assert await still_streaming(publisher), "no video ~6 s after the caller's audio stopped"
        await publisher.stop(http)
        assert (await healthz(server, http))["sessions"] == 0


async def test_a_silent_vanished_client_is_ended_by_the_transport_timeout(avatar: Avatar) -> None:
    """A client whose sockets go quiet (no DELETE, no DTLS close) is freed within the timeout."""
    timeout_s = 2.0
    config = replace(CONFIG, session=SessionConfig(transport_timeout_s=timeout_s))
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        silence_client(publisher.pc)
        went_quiet = time.monotonic()
        await asyncio.wait_for(session.ended.wait(), 4 * timeout_s)
        assert session.end_reason == "transport_timeout"
        assert time.monotonic() - went_quiet >= timeout_s * 0.9
        await publisher.stop()


def silence_client(pc: RTCPeerConnection) -> None:
    """Close the client's UDP sockets under aiortc: as if the process froze or the network went."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()


class NoiseVideoTrack(VideoStreamTrack):
    """A 640x640 camera of random pixels (VP8 cannot compress it away)."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        pixels = np.random.default_rng(pts).integers(0, 255, (VIDEO_SIZE_PX, VIDEO_SIZE_PX, 3), np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(time_base)
        return frame


async def test_video_a_caller_sends_is_never_received(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        pc = new_peer_connection()
        pc.addTransceiver(PcmTrack(SILENCE), direction="sendrecv")
        pc.addTransceiver(NoiseVideoTrack(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{server.url}/v1/sessions", data=pc.localDescription.sdp,
                             headers=SDP) as response:
            assert response.status == 201, await response.text()
            answer = await response.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.sleep(3)
        session = next(iter(server.state.sessions.values()))
        video = [t for t in session.pc.getTransceivers() if t.kind == "video"][0]
        assert video.currentDirection == "sendonly"
        stats = await video.receiver.getStats()
        received = [s.packetsReceived for s in stats.values() if s.type == "inbound-rtp"]
        assert sum(received) == 0, f"the server received {sum(received)} video packets"
        await pc.close()


async def test_the_answer_asks_for_opus_dtx_and_fec(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        answer = str(publisher.pc.remoteDescription.sdp)
        assert "usedtx=1" in answer and "useinbandfec=1" in answer, answer
        await publisher.stop(http)


async def test_a_session_ends_at_its_maximum_duration(avatar: Avatar) -> None:
    config = replace(CONFIG, session=SessionConfig(max_duration_s=2.0))
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        await asyncio.wait_for(session.ended.wait(), 6)
        assert session.end_reason == "max_duration"
        assert (await healthz(server, http))["sessions"] == 0
        await publisher.stop()


async def slow_body(sdp: str, held: asyncio.Event) -> AsyncIterator[bytes]:
    """The viewer's offer, its second half sent only once `held` is set."""
    yield sdp[: len(sdp) // 2].encode()
    await held.wait()
    yield sdp[len(sdp) // 2:].encode()


async def viewer_offer() -> str:
    pc = new_peer_connection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def test_a_viewer_arriving_while_its_session_is_deleted_leaves_no_zombie(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        held = asyncio.Event()
        url = f"{server.url}{publisher.location}/viewers"
        post = asyncio.ensure_future(http.post(url, data=slow_body(await viewer_offer(), held), headers=SDP))
        await asyncio.sleep(0.3)  # the viewer's request is in, its body still arriving
        async with http.delete(f"{server.url}{publisher.location}") as response:
            assert response.status == 204
        held.set()
        async with await post as response:
            assert response.status == 404, await response.text()
        assert session.viewers == {}
        async with http.get(f"{server.url}/metrics") as response:
            assert "lipstream_viewers 0.0" in await response.text()
        await publisher.stop()


@pytest.mark.parametrize("delete_after_s", [0.0, 0.02])
async def test_a_viewer_racing_the_delete_of_its_session_gets_201_or_404(
        avatar: Avatar, delete_after_s: float) -> None:
    """DELETE lands while the viewer's answer is being made: never a 400, never a zombie."""
    async with serving(CONFIG, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        offer = await viewer_offer()
        post = asyncio.ensure_future(http.post(f"{server.url}{publisher.location}/viewers", data=offer,
                                               headers=SDP))
        await asyncio.sleep(delete_after_s)
        async with http.delete(f"{server.url}{publisher.location}") as response:
            assert response.status == 204
        async with await post as response:
            assert response.status in (201, 404), await response.text()
        await session.ended.wait()
        assert session.viewers == {}
        async with http.get(f"{server.url}/metrics") as response:
            assert "lipstream_viewers 0.0" in await response.text()
        await publisher.stop()


async def test_a_viewer_being_answered_when_its_session_closes_is_told_the_session_ended(
        avatar: Avatar) -> None:
    """Close at each step of the viewer's answer (aiortc raises InvalidStateError at some): always
    SessionEnded (a 404), no viewer left, the gauge back to 0."""
    metrics, pool = ServerMetrics(), RenderPool(1)
    try:
        for steps in range(6):
            session = Session(Engine(avatar), pool, metrics, MonotonicClock())
            adding = asyncio.ensure_future(session.add_viewer(await viewer_offer()))
            for _ in range(steps):
                await asyncio.sleep(0)  # let the answer get that far
            await session.close("deleted")
            with pytest.raises(SessionEnded):
                await adding
            assert session.viewers == {}
        assert "lipstream_viewers 0.0" in metrics.render().decode()
    finally:
        pool.shutdown()


async def test_a_viewer_that_vanishes_is_freed_by_the_transport_timeout(avatar: Avatar) -> None:
    timeout_s = 2.0
    config = replace(CONFIG, session=SessionConfig(transport_timeout_s=timeout_s))
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        viewer = new_peer_connection()
        viewer.addTransceiver("video", direction="recvonly")
        await viewer.setLocalDescription(await viewer.createOffer())
        async with http.post(f"{server.url}{publisher.location}/viewers", data=viewer.localDescription.sdp,
                             headers=SDP) as response:
            assert response.status == 201, await response.text()
            answer = await response.text()
        await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        for _ in range(100):
            if viewer.connectionState == "connected":
                break
            await asyncio.sleep(0.1)
        assert len(session.viewers) == 1
        silence_client(viewer)
        for _ in range(round(40 * timeout_s)):
            if not session.viewers:
                break
            await asyncio.sleep(0.1)
        assert session.viewers == {}, "a vanished viewer is still being encoded for"
        assert await still_streaming(publisher)
        await publisher.stop(http)
        await viewer.close()
