"""A peer that writes a new SSRC into every packet (lipstream/streaming/ssrcs.py): libsrtp kept a
stream context for each (384 bytes, searched linearly per packet) and aiortc's router an entry, for
as long as the connection lived. Real aiortc peers on loopback send real SRTP through their own
DTLS transport, each packet from a new SSRC; the server must end the connection past the limit,
and say why."""

import asyncio

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket

from lipstream.engine.avatar import Avatar
from lipstream.streaming.server import ServeConfig
from lipstream.streaming.session import new_peer_connection
from lipstream.streaming.ssrcs import MAX_PEER_SSRCS
from tests.serving import SDP, SILENCE, publish, serving, still_streaming

pytestmark = pytest.mark.usefixtures("loopback")

CONFIG = ServeConfig(max_sessions=2, loopback_ice=False)
CHURNED_SSRCS = 3 * MAX_PEER_SSRCS  # enough that a limit off by a few still shows
SEND_GAP_S = 0.005  # between packets: a burst on a busy 2-core machine loses some to the socket buffer
FIRST_SSRC = 1_000_000
OPUS_PT = 96  # what aiortc's offer numbers Opus (tests/test_rtp_streams.py reads the same)
SILENT_OPUS = b"\xf8\xff\xfe"  # one 20 ms Opus frame of silence (a DTX packet)


async def churn(pc: RTCPeerConnection, stop: asyncio.Event) -> int:
    """Send one Opus packet from each of CHURNED_SSRCS new SSRCs, through `pc`'s real SRTP -> sent."""
    dtls = next(t.sender.transport for t in pc.getTransceivers() if t.sender.transport is not None)
    for n in range(CHURNED_SSRCS):
        if stop.is_set():
            return n
        packet = RtpPacket(payload_type=OPUS_PT, sequence_number=n, timestamp=n * 960, ssrc=FIRST_SSRC + n,
                           payload=SILENT_OPUS)
        try:
            await dtls._send_rtp(packet.serialize())
        except ConnectionError:  # the server ended the connection
            return n
        await asyncio.sleep(SEND_GAP_S)
    return CHURNED_SSRCS


async def ended_reasons(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as response:
        return "\n".join(line for line in (await response.text()).splitlines()
                         if line.startswith("lipstream_sessions_ended_total"))


async def test_a_publisher_that_keeps_changing_its_ssrc_is_ended_with_a_reason(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        assert await still_streaming(publisher), "a real peer's own SSRCs must stay within the limit"
        sent = await churn(publisher.pc, session.ended)
        await asyncio.wait_for(session.ended.wait(), 10)
        assert session.end_reason == "ssrc_churn", session.end_reason
        assert MAX_PEER_SSRCS - 4 <= sent < CHURNED_SSRCS, sent  # ended at the limit, not before it
        assert 'reason="ssrc_churn"} 1.0' in await ended_reasons(http, server.url)
        await publisher.stop(http)


async def test_a_viewer_that_keeps_changing_its_ssrc_is_dropped_the_session_goes_on(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        session = next(iter(server.state.sessions.values()))
        viewer = await watch(http, f"{server.url}{publisher.location}/viewers")
        try:
            assert len(session.viewers) == 1
            await churn(viewer, asyncio.Event())
            for _ in range(50):
                if not session.viewers:
                    break
                await asyncio.sleep(0.1)
            assert session.viewers == {}, "a viewer churning SSRCs is still connected"
            assert await still_streaming(publisher)
        finally:
            await viewer.close()
        await publisher.stop(http)


async def watch(http: aiohttp.ClientSession, url: str) -> RTCPeerConnection:
    """A connected aiortc viewer that also sends audio (so it has an SRTP sender to churn with)."""
    viewer = new_peer_connection()
    viewer.addTransceiver("video", direction="recvonly")
    viewer.addTransceiver("audio", direction="recvonly")
    await viewer.setLocalDescription(await viewer.createOffer())
    async with http.post(url, data=viewer.localDescription.sdp, headers=SDP) as response:
        assert response.status == 201, await response.text()
        answer = await response.text()
    await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    for _ in range(100):
        if viewer.connectionState == "connected":
            return viewer
        await asyncio.sleep(0.1)
    raise AssertionError(f"the viewer did not connect: {viewer.connectionState}")
