"""Helpers for tests that run `lipstream serve` on loopback with real aiortc peers."""

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
from aiohttp import web

from lipstream.engine.avatar import Avatar
from lipstream.engine.engine import Engine
from lipstream.streaming.api import STATE
from lipstream.streaming.client import PcmTrack, Publisher
from lipstream.streaming.server import ServeConfig, create_app
from lipstream.streaming.session import new_peer_connection
from lipstream.streaming.state import ServerState

SDP = {"Content-Type": "application/sdp"}  # the headers of a request carrying an SDP offer
SILENCE = np.zeros(16_000, np.float32)  # one second at 16 kHz: what a quiet publisher sends


def loopback_only(monkeypatch: "object") -> None:
    """NOTES.md: aioice skips 127.0.0.1; tests gather only it, so no packet leaves the machine."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses",  # type: ignore[attr-defined]
                        lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@dataclass
class RunningServer:
    url: str
    app: web.Application

    @property
    def state(self) -> ServerState:
        return self.app[STATE]


@contextlib.asynccontextmanager
async def running_server(config: ServeConfig, **seams: Callable[..., object]) -> AsyncIterator[RunningServer]:
    app = create_app(config, **seams)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


def seams(avatar: Avatar) -> dict[str, Callable[..., object]]:
    """The real engine, on the test's avatar instead of analysing the default photo again."""
    return {"engine_factory": Engine, "load_avatar": lambda: avatar}


@contextlib.asynccontextmanager
async def serving(config: ServeConfig,
                  avatar: Avatar) -> AsyncIterator[tuple[RunningServer, aiohttp.ClientSession]]:
    """A server on `avatar` (seams above) and an HTTP client for it."""
    async with running_server(config, **seams(avatar)) as server, aiohttp.ClientSession() as http:
        yield server, http


async def expect(response: aiohttp.ClientResponse, status: int, says: str) -> None:
    """A refusal: this status, and a JSON error that says `says`."""
    body = await response.json()
    assert response.status == status, body
    assert says in body["error"], body["error"]


async def client_offer(audio: str | None, video: str) -> str:
    """What a real aiortc client's createOffer writes (audio `None`: no audio m-line)."""
    pc = new_peer_connection()
    if audio == "sendrecv":
        pc.addTransceiver(PcmTrack(SILENCE), direction="sendrecv")
    elif audio is not None:
        pc.addTransceiver("audio", direction=audio)
    pc.addTransceiver("video", direction=video)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def publish(server: RunningServer, http: aiohttp.ClientSession, pcm: np.ndarray,
                  token: str | None = None, **kwargs: object) -> Publisher:
    publisher = Publisher(server.url, pcm, token=token, **kwargs)  # type: ignore[arg-type]
    await publisher.start(http)
    await asyncio.wait_for(publisher.connected.wait(), 10)
    return publisher


async def still_streaming(publisher: Publisher, within_s: float = 2.0, frames: int = 5) -> bool:
    """True as soon as `frames` new frames arrive; False if they do not within `within_s`.

    A liveness check, not a rate check (tests share a busy machine): rates are measured elsewhere.
    """
    before = len(publisher.received.video_pts)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if len(publisher.received.video_pts) - before >= frames:
            return True
        await asyncio.sleep(0.02)
    return False


async def record_session(pcm: np.ndarray, config: ServeConfig, keep_size: int | None = None,
                         tail_s: float = 0.5, **seams: Callable[..., object]) -> Publisher:
    """Run a server, publish `pcm` at real time, and return the publisher with what it received."""
    async with running_server(config, **seams) as server, aiohttp.ClientSession() as http:
        publisher = await publish(server, http, pcm, keep_size=keep_size)
        await asyncio.sleep(pcm.size / 16_000 + tail_s)
        await publisher.stop(http)
        return publisher


class MachineLoad:
    """How much CPU other programs took while a test ran (in cores), from /proc/stat.

    Tests share a 2-core box with whatever else runs; a frame gap while other programs keep both
    cores busy says little about the server. Tests hold real-time criteria strictly on a quiet
    machine and loosen them, saying so, on a busy one.
    """

    def __enter__(self) -> "MachineLoad":
        self._start = (time.monotonic(), _machine_busy_s(), time.process_time())
        return self

    def __exit__(self, *_: object) -> None:
        wall, busy, own = (now - then for now, then in
                           zip((time.monotonic(), _machine_busy_s(), time.process_time()), self._start,
                               strict=True))
        self.others_cores = max(busy - own, 0.0) / wall


def _machine_busy_s() -> float:
    """CPU seconds all programs spent running (not idle or waiting for I/O) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
