"""`lipstream serve` over real HTTP and real aiortc peers on loopback: the API, its errors and
limits, and session lifecycle. Each hostile request must leave a running session streaming."""

import asyncio
import contextlib
import gc
import io
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import replace

import aiohttp
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from PIL import Image

from lipstream.engine.avatar import Avatar
from lipstream.engine.engine import Engine
from lipstream.streaming.client import realtime_fps, transport_offsets_s
from lipstream.streaming.server import ServeConfig
from lipstream.streaming.session import SessionConfig, new_peer_connection
from tests.serving import SDP, SILENCE, expect, publish, running_server, serving, still_streaming

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = ServeConfig(max_sessions=2, token=TOKEN, loopback_ice=False)


pytestmark = pytest.mark.usefixtures("loopback")


def png(width: int, height: int, flat: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.full((height, width, 3), 128, np.uint8) if flat else \
        rng.integers(0, 255, (height, width, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


async def test_hostile_requests_get_json_reasons_and_the_live_session_keeps_streaming(
        avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        live = await publish(server, http, SILENCE, token=TOKEN)
        offer = live.pc.localDescription.sdp
        wrong_token = SDP | {"Authorization": "Bearer nope"}
        bad_sdp = "v=0\r\no=- 0 0 IN IP4 x\r\nm=audio 9 RTP/AVP 0\r\nm=video x\r\n"
        checks: list[tuple[str, str, object, dict[str, str], int, str]] = [
            ("POST", "/v1/sessions", "v=0", SDP, 401, "Bearer"),
            ("POST", "/v1/sessions", "v=0", wrong_token, 401, "token"),
            ("POST", "/v1/sessions", "hello", SDP | AUTH, 400, "malformed SDP"),
            ("POST", "/v1/sessions", bad_sdp, SDP | AUTH, 400, "SDP"),
            ("POST", "/v1/sessions", "v=0", AUTH | {"Content-Type": "text/plain"}, 415, "application/sdp"),
            ("POST", "/v1/sessions", "v=0\n" + "a" * 70_000, SDP | AUTH, 413, "limit"),
            ("DELETE", "/v1/sessions/nope", None, AUTH, 404, "no session"),
            ("POST", "/v1/sessions/nope/viewers", "v=0", SDP | AUTH, 404, "no session"),
            ("POST", "/v1/sessions?avatar=nope", offer, SDP | AUTH, 404, "no avatar"),
            ("POST", "/v1/avatars", b"not an image", AUTH, 422, "JPEG or PNG"),
            ("POST", "/v1/avatars", png(9000, 6000, flat=True), AUTH, 422, "MP"),  # 54 MP, a small file
            ("POST", "/v1/avatars", png(320, 320, flat=True), AUTH, 422, "no face"),
            ("POST", "/v1/avatars", b"\0" * (21 * 1024 * 1024), AUTH, 413, "limit"),
            ("GET", "/v1/nothing-here", None, {}, 404, "Not Found"),
        ]
        for method, path, body, headers, status, says in checks:
            async with http.request(method, server.url + path, data=body, headers=headers) as response:
                await expect(response, status, says)
            assert await still_streaming(live), f"the live session stalled after a {status}"
        assert len(server.state.sessions) == 1  # no half-made session left behind
        await live.stop(http)


async def test_over_capacity_is_503_with_retry_after_and_a_freed_slot_is_reusable(avatar: Avatar) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        first = await publish(server, http, SILENCE, token=TOKEN)
        second = await publish(server, http, SILENCE, token=TOKEN)
        async with http.post(f"{server.url}/v1/sessions", data=first.pc.localDescription.sdp,
                             headers=SDP | AUTH) as response:
            await expect(response, 503, "capacity")
            assert int(response.headers["Retry-After"]) > 0
        assert await still_streaming(first) and await still_streaming(second)
        await second.stop(http)  # DELETE frees the slot at once
        third = await publish(server, http, SILENCE, token=TOKEN)
        assert await still_streaming(third) and await still_streaming(first)
        for publisher in (first, third):
            await publisher.stop(http)
        assert server.state.sessions == {}


async def test_delete_releases_everything_and_is_idempotent(avatar: Avatar) -> None:
    config = replace(CONFIG, token=None)
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        assert await still_streaming(publisher)
        session = next(iter(server.state.sessions.values()))
        async with http.delete(server.url + str(publisher.location)) as response:
            assert response.status == 204
        assert session.end_reason == "deleted"
        assert session.pc.connectionState == "closed"
        assert session.producer.engine is None
        assert all(task.done() for task in session._tasks)
        async with http.delete(server.url + str(publisher.location)) as response:
            await expect(response, 404, "no session")
        await session.close("again")  # a second teardown is harmless
        gone, session = weakref.ref(session), None  # type: ignore[assignment]
        gc.collect()
        assert gone() is None, "something still holds the ended session (and its engine)"
        async with http.get(f"{server.url}/healthz") as response:
            assert (await response.json())["sessions"] == 0
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
        assert "lipstream_sessions 0.0" in text
        assert 'lipstream_sessions_ended_total{reason="deleted"} 1.0' in text
        assert 'lipstream_frames_total{result="rendered"}' in text
        await publisher.stop()


VANISHING_PEER = """
import asyncio, sys, aiohttp, aioice.ice, numpy as np
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
from lipstream.streaming.client import Publisher
async def main():
    async with aiohttp.ClientSession() as http:
        publisher = Publisher(sys.argv[1], np.zeros(16000, np.float32))
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        print("connected", flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_a_peer_that_vanishes_is_freed_within_5_s(avatar: Avatar) -> None:
    # Nothing at all arrives from a killed peer: the transport timeout (shortened here) frees it.
    config = replace(CONFIG, token=None, session=SessionConfig(transport_timeout_s=3.0))
    async with serving(config, avatar) as (server, http):
        live = await publish(server, http, SILENCE)
        peer = subprocess.Popen([sys.executable, "-c", VANISHING_PEER, server.url], stdout=subprocess.PIPE,
                                env=os.environ | {"PYTHONPATH": os.getcwd()})
        try:
            line = await asyncio.get_running_loop().run_in_executor(None, peer.stdout.readline)  # type: ignore[union-attr]
            assert line.strip() == b"connected"
            assert len(server.state.sessions) == 2
            peer.send_signal(signal.SIGKILL)  # no DELETE, no DTLS close: packets just stop
            killed = time.monotonic()
            while len(server.state.sessions) > 1 and time.monotonic() - killed < 10:
                await asyncio.sleep(0.1)
            freed_after_s = time.monotonic() - killed
        finally:
            peer.kill()
            peer.wait()
        assert freed_after_s < 5.0, f"session of a vanished peer lived {freed_after_s:.1f} s"
        assert await still_streaming(live)
        await live.stop(http)


VIEWER_CONNECT_S = 15.0  # the session's own connect timeout


async def wait_for_first(frames: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not frames:
        assert time.monotonic() < deadline, f"viewer got no frame in {timeout_s:.0f} s"
        await asyncio.sleep(0.02)


async def test_viewer_watches_a_session_and_avatar_upload_starts_one(avatar: Avatar) -> None:
    config = replace(CONFIG, token=None)
    async with serving(config, avatar) as (server, http):
        photo = io.BytesIO()
        Image.fromarray(avatar.image).save(photo, format="JPEG")
        form = aiohttp.FormData()
        form.add_field("photo", photo.getvalue(), filename="me.jpg", content_type="image/jpeg")
        async with http.post(f"{server.url}/v1/avatars", data=form) as response:
            assert response.status == 201, await response.text()
            avatar_id = (await response.json())["id"]
        publisher = await publish(server, http, SILENCE, avatar=avatar_id)
        viewer = new_peer_connection()
        viewer.addTransceiver("video", direction="recvonly")
        viewer.addTransceiver("audio", direction="recvonly")
        frames: list[int] = []

        @viewer.on("track")
        def on_track(track: object) -> None:
            async def drain() -> None:
                while True:
                    frames.append((await track.recv()).pts)  # type: ignore[attr-defined]
            if getattr(track, "kind", "") == "video":
                asyncio.ensure_future(drain())

        await viewer.setLocalDescription(await viewer.createOffer())
        async with http.post(f"{server.url}{publisher.location}/viewers",
                             data=viewer.localDescription.sdp, headers=SDP) as response:
            assert response.status == 201, await response.text()
            viewer_url = server.url + response.headers["Location"]
            answer = await response.text()
        await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        # Counted from the first frame: connecting (ICE, DTLS) takes longer on a loaded machine,
        # and that is not the stream's rate.
        await wait_for_first(frames, VIEWER_CONNECT_S)
        first = len(frames)
        await asyncio.sleep(2.0)
        got = len(frames) - first
        assert got >= 30, f"viewer got {got} frames in the 2 s after its first"
        assert await still_streaming(publisher)
        async with http.delete(viewer_url) as response:
            assert response.status == 204
        await viewer.close()
        await publisher.stop(http)


async def test_non_loopback_bind_requires_a_token_and_default_capacity_is_measured(
        avatar: Avatar) -> None:
    config = ServeConfig(host="0.0.0.0", loopback_ice=False)  # bound to loopback here all the same
    async with serving(config, avatar) as (server, http):
        assert server.state.token_generated and len(server.state.token or "") >= 24
        async with http.post(f"{server.url}/v1/sessions", data="v=0", headers=SDP) as response:
            await expect(response, 401, "Bearer")
        async with http.get(f"{server.url}/healthz") as response:
            health = await response.json()
        assert health["status"] == "ok" and health["max_sessions"] >= 1


async def test_an_h264_only_offer_gets_h264(avatar: Avatar) -> None:
    """OBS decodes only H.264: the server must not strip it from what it can send."""
    config = replace(CONFIG, token=None)
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE, video_codec="video/H264")
        assert await still_streaming(publisher)
        assert "H264/90000" in str(publisher.pc.remoteDescription.sdp).split("m=video")[1]
        await publisher.stop(http)


async def test_a_machine_too_slow_to_render_every_frame_skips_renders_and_stays_live(avatar: Avatar) -> None:
    """Renders that take 60 ms (a 40 ms budget): the session keeps 25 fps and its audio, repeats
    images instead of queueing them, and says so in the metrics."""

    def slow_engine(a: Avatar) -> Engine:
        engine = Engine(a)
        render = engine.renderer.render

        def slow_render(controls: np.ndarray, index: int) -> np.ndarray:
            time.sleep(0.06)  # in a worker thread: this is the slow machine, not the event loop
            return render(controls, index)

        engine.renderer.render = slow_render  # type: ignore[method-assign]
        return engine

    config = replace(CONFIG, token=None)
    async with running_server(config, engine_factory=slow_engine, load_avatar=lambda: avatar) as server, \
            aiohttp.ClientSession() as http:
        publisher = await publish(server, http, SILENCE)
        await asyncio.sleep(3.0)
        counts = next(iter(server.state.sessions.values())).producer.counts
        assert await still_streaming(publisher)
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
        await publisher.stop(http)
    assert counts["skipped"] > 10 and counts["rendered"] > 10, counts
    assert 'lipstream_frames_total{result="skipped"}' in text
    assert realtime_fps(publisher.received) > 24.5
    assert abs(np.median(transport_offsets_s(publisher.received, skip_s=0.5))) < 0.02  # still in sync


async def test_lipstream_serve_command_starts_with_measured_capacity() -> None:
    """The real command, default avatar and engine: it binds, measures capacity and serves."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        health = None
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                await asyncio.sleep(0.1)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        health = await response.json()
                        break
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert health is not None, err.decode()[-2000:]
    assert health["max_sessions"] >= 1 and health["sessions"] == 0
    assert f"http://localhost:{port}/" in out.decode()
    assert "capacity:" in err.decode()  # how the default limit was derived is logged
