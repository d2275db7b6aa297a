"""Who may do what on `lipstream serve`, over real HTTP on loopback: Host and Origin checks,
viewer-scoped tokens, body timeouts, session status, and shutdown with a request in flight."""

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import aiohttp
import numpy as np
import pytest
from aiortc.mediastreams import AudioStreamTrack

from lipstream.engine.avatar import Avatar
from lipstream.streaming.guards import VIEWER_TOKEN_HEADER
from lipstream.streaming.server import ServeConfig
from lipstream.streaming.session import new_peer_connection
from lipstream.streaming.state import ENDED_KEPT
from tests.serving import SDP, RunningServer, publish, serving

TOKEN = "security-test-token"
OPEN = ServeConfig(max_sessions=2, loopback_ice=False)  # loopback, no token
GUARDED = replace(OPEN, token=TOKEN)
EVIL = "http://evil.example"


pytestmark = pytest.mark.usefixtures("loopback")


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def answer(response: aiohttp.ClientResponse) -> tuple[int, dict[str, str]]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


async def test_a_loopback_server_answers_only_to_its_own_host_names(avatar: Avatar) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 must not reach the token-less server."""
    async with serving(OPEN, avatar) as (server, http):
        port = port_of(server)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            async with http.get(f"{server.url}/healthz", headers={"Host": host}) as response:
                assert response.status == 200, host
        for host in (f"evil.example:{port}", "localhost", f"localhost:{port + 1}", f"10.0.0.1:{port}"):
            async with http.get(f"{server.url}/healthz", headers={"Host": host}) as response:
                status, body = await answer(response)
            assert status == 421 and "localhost" in body["error"], (host, body)


async def test_pages_of_other_sites_cannot_change_anything(avatar: Avatar) -> None:
    """A cross-site form post (a 'simple' request: no CORS preflight) must not upload or delete."""
    async with serving(OPEN, avatar) as (server, http):
        form = aiohttp.FormData()
        form.add_field("photo", b"not an image", filename="x.jpg", content_type="image/jpeg")
        async with http.post(f"{server.url}/v1/avatars", data=form, headers={"Origin": EVIL}) as response:
            status, body = await answer(response)
        assert status == 403 and EVIL in body["error"], body
        for method, path, origin in (("DELETE", "/v1/sessions/abc", EVIL), ("POST", "/v1/sessions", EVIL),
                                     ("POST", "/v1/sessions", "null")):
            async with http.request(method, server.url + path, data="v=0",
                                    headers=SDP | {"Origin": origin}) as response:
                assert (await answer(response))[0] == 403, (path, origin)
        async with http.get(f"{server.url}/healthz", headers={"Origin": EVIL}) as response:
            assert response.status == 200  # reading is harmless: no CORS header, so the page cannot
        async with http.post(f"{server.url}/v1/avatars", data=b"not an image",
                             headers={"Origin": server.url}) as response:
            status, body = await answer(response)
        assert status == 422, body  # the server's own page gets through to the photo check


async def test_with_a_token_any_host_is_served_and_cross_site_posts_are_refused(avatar: Avatar) -> None:
    async with serving(GUARDED, avatar) as (server, http):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{server.url}/healthz", headers={"Host": "lipstream.lan:8080"}) as response:
            assert response.status == 200  # reached by whatever name the network gives it
        async with http.post(f"{server.url}/v1/avatars", data=b"x",
                             headers=auth | {"Origin": EVIL}) as response:
            assert (await answer(response))[0] == 403


async def create_session(server: RunningServer, http: aiohttp.ClientSession) -> tuple[str, str | None]:
    """POST an offer (no ICE needed to get the answer) -> (session id, viewer token header)."""
    pc = new_peer_connection()
    pc.addTrack(AudioStreamTrack())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(f"{server.url}/v1/sessions", data=pc.localDescription.sdp,
                         headers=SDP | {"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 201, await response.text()
        location, viewer_token = response.headers["Location"], response.headers.get(VIEWER_TOKEN_HEADER)
    await pc.close()
    return location.rsplit("/", 1)[-1], viewer_token


async def viewer_offer() -> str:
    pc = new_peer_connection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return str(pc.localDescription.sdp)


async def test_a_viewer_token_watches_its_session_and_nothing_else(avatar: Avatar) -> None:
    async with serving(GUARDED, avatar) as (server, http):
        watched, viewer_token = await create_session(server, http)
        other, _ = await create_session(server, http)
        assert viewer_token and viewer_token != TOKEN
        as_viewer = {"Authorization": f"Bearer {viewer_token}"}
        async with http.get(f"{server.url}/v1/sessions/{watched}", headers=as_viewer) as response:
            assert response.status == 200 and (await response.json())["state"] == "connecting"
        async with http.post(f"{server.url}/v1/sessions/{watched}/viewers", data=await viewer_offer(),
                             headers=SDP | as_viewer) as response:
            assert response.status == 201, await response.text()
            viewer_url = server.url + response.headers["Location"]
        async with http.delete(viewer_url, headers=as_viewer) as response:
            assert response.status == 204
        refused = [("GET", f"/v1/sessions/{other}", None), ("POST", f"/v1/sessions/{other}/viewers", SDP),
                   ("DELETE", f"/v1/sessions/{watched}", None), ("DELETE", f"/v1/sessions/{other}", None),
                   ("POST", "/v1/sessions", SDP), ("POST", "/v1/avatars", None)]
        for method, path, content_type in refused:
            async with http.request(method, server.url + path, data=await viewer_offer(),
                                    headers=(content_type or {}) | as_viewer) as response:
                status, body = await answer(response)
            assert status == 401 and "token" in body["error"], (method, path, body)
        assert set(server.state.sessions) == {watched, other}


async def test_without_tokens_no_viewer_token_is_issued(avatar: Avatar) -> None:
    async with serving(OPEN, avatar) as (server, http):
        _, viewer_token = await create_session(server, http)
        assert viewer_token is None


async def dribble(port: int, body_bytes: int, every_s: float, path: str = "/v1/sessions",
                  content_type: str = "application/sdp") -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter, "asyncio.Task[None]"]:
    """A POST whose body arrives one byte per `every_s`: the slow-body attack."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {body_bytes}\r\n\r\n").encode())

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(body_bytes):
                writer.write(b"v")
                await writer.drain()
                await asyncio.sleep(every_s)

    return reader, writer, asyncio.create_task(trickle())


MULTIPART = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/sessions", "application/sdp"), ("/v1/avatars", "image/jpeg"), ("/v1/avatars", MULTIPART)])
async def test_a_dribbled_body_gets_408_and_its_connection_is_closed(avatar: Avatar, path: str,
                                                                     content_type: str) -> None:
    config = replace(OPEN, body_timeout_s=1.0)
    async with serving(config, avatar) as (server, _):
        reader, writer, trickle = await dribble(port_of(server), 10_000, 0.1, path, content_type)
        started = time.monotonic()
        reply = await asyncio.wait_for(reader.read(), timeout=8.0)  # read() to EOF: it must close
        waited = time.monotonic() - started
        trickle.cancel()
        writer.close()
        head, _, body = reply.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 408"), reply
        assert "application/json" in head and "too slowly" in body, reply
        assert waited < 8.0
        assert server.state.slots_in_use == 0  # no slot held
        assert ServeConfig().body_timeout_s <= 10.0


async def test_a_body_slower_than_the_grace_period_but_steady_is_read(avatar: Avatar) -> None:
    """A big photo on a slow uplink takes longer than the grace period: only the rate counts."""
    config = replace(OPEN, body_timeout_s=0.5, min_body_bytes_per_s=2_000)
    async with serving(config, avatar) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        body = b"x" * 6_000  # at 5000 B/s: 1.2 s, over twice the grace period
        writer.write((f"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port_of(server)}\r\n"
                      f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        for start in range(0, len(body), 1_000):
            writer.write(body[start:start + 1_000])
            await writer.drain()
            await asyncio.sleep(0.2)
        reply = (await asyncio.wait_for(reader.readuntil(b"}"), timeout=5.0)).decode()
        writer.close()
    assert reply.startswith("HTTP/1.1 400") and "malformed SDP" in reply, reply  # read, then judged


async def test_session_status_says_live_then_why_it_ended(avatar: Avatar) -> None:
    async with serving(OPEN, avatar) as (server, http):
        publisher = await publish(server, http, np.zeros(16_000, np.float32))
        url = server.url + (publisher.location or "")
        async with http.get(url) as response:
            status = await response.json()
        assert response.status == 200 and status["state"] == "live" and status["viewers"] == 0, status
        assert status["age_s"] >= 0
        await publisher.stop(http)  # DELETE
        async with http.get(url) as response:
            status_code, ended = await answer(response)
        assert status_code == 404 and "stopped" in ended["reason"], ended
        async with http.get(f"{server.url}/v1/sessions/never-was") as response:
            status_code, unknown = await answer(response)
        assert status_code == 404 and "reason" not in unknown


async def test_end_reasons_are_bounded(avatar: Avatar) -> None:
    async with serving(OPEN, avatar) as (server, _):
        for n in range(ENDED_KEPT + 10):
            server.state.forget(SimpleNamespace(id=f"s{n}", end_reason="deleted"))  # type: ignore[arg-type]
        assert len(server.state.ended) == ENDED_KEPT and "s0" not in server.state.ended


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_with_a_body_in_flight_exits_within_5_s() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--port", str(port),
                               "--max-sessions", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                await asyncio.sleep(0.1)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz"):
                        break
        _, writer, trickle = await dribble(port, 1_000, every_s=1.0)
        await asyncio.sleep(1.5)  # the request is being handled
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        while server.poll() is None and time.monotonic() - started < 15:
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        trickle.cancel()
        writer.close()
    finally:
        if server.poll() is None:
            server.kill()
        _, err = server.communicate(timeout=10)
    assert took < 5.0, f"exited {took:.1f} s after SIGTERM: {err.decode()[-1000:]}"
    assert "Traceback" not in err.decode(), err.decode()[-2000:]


@pytest.mark.parametrize("request_head", [b"GARBAGE / HTTP/1.1\r\n\r\n",
                                          b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
                                          b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"])
async def test_requests_aiohttp_cannot_parse_get_a_json_400(avatar: Avatar, request_head: bytes) -> None:
    async with serving(OPEN, avatar) as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
        writer.write(request_head)
        await writer.drain()
        reply = (await asyncio.wait_for(reader.read(), timeout=10)).decode(errors="replace")
        writer.close()
        head, _, body = reply.partition("\r\n\r\n")
        assert head.split()[1].startswith("4"), reply
        assert "application/json" in head and '"error": "malformed HTTP request' in body, reply


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/sessions", "application/sdp"), ("/v1/avatars", "image/jpeg"), ("/v1/avatars", MULTIPART)])
async def test_a_body_its_content_encoding_does_not_decode_gets_a_json_400(
        avatar: Avatar, path: str, content_type: str, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp decodes a gzip body as it reads it; bytes that are not gzip were once a 500, then a
    400 with a traceback logged for each."""
    caplog.set_level(logging.ERROR)
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    async with serving(OPEN, avatar) as (server, http):
        async with http.post(server.url + path, data=b"v=0 and not gzip", headers=headers) as response:
            status, body = await answer(response)
        assert status == 400 and "Content-Encoding" in body["error"], body
        assert server.state.slots_in_use == 0
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200  # and it serves on
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
