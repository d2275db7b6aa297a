"""A lossy network on loopback: a UDP relay between a WebRTC client and `lipstream serve`.

The kernel here has no netem, so tests put this relay in the media path instead. A signalling
proxy in front of the server rewrites the ICE candidates in the offer and the answer so each peer
sees only the relay: the client sends to the relay's client-facing socket, which forwards to the
server from its server-facing socket, and back. Each direction drops, duplicates and delays
packets (a jittered delay also reorders them) as the test commands; `outage` drops everything.
"""

import asyncio
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

LOOPBACK = "127.0.0.1"
CANDIDATE_PORT = re.compile(r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host)", re.I)


@dataclass(frozen=True)
class Impairment:
    """What one direction of the relay does to each packet."""

    loss: float = 0.0  # probability a packet is dropped
    duplicate: float = 0.0  # probability a packet is sent twice
    delay_ms: float = 0.0  # added to every packet...
    jitter_ms: float = 0.0  # ...plus uniform in +/- this (packets overtake each other)


CLEAN = Impairment()
OUTAGE = Impairment(loss=1.0)


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0


class _Side(asyncio.DatagramProtocol):
    """One socket of the relay; what it receives goes out of the other one."""

    def __init__(self, relay: "UdpRelay", upstream: bool) -> None:
        self.relay, self.upstream = relay, upstream
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.forward(data, self.upstream)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


class UdpRelay:
    """Client <-> [client side | server side] <-> server, one session, impaired on command."""

    def __init__(self, seed: int = 1) -> None:
        self.up, self.down = CLEAN, CLEAN  # client -> server, server -> client
        self.stats = RelayStats()
        self.client_addr: tuple[str, int] | None = None  # learnt from the offer
        self.server_addr: tuple[str, int] | None = None  # learnt from the answer
        self._random = random.Random(seed)
        self._client_side = _Side(self, upstream=True)
        self._server_side = _Side(self, upstream=False)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for side in (self._client_side, self._server_side):
            await loop.create_datagram_endpoint(lambda side=side: side, local_addr=(LOOPBACK, 0))

    def close(self) -> None:
        for side in (self._client_side, self._server_side):
            if side.transport is not None:
                side.transport.close()

    def impair(self, both: Impairment | None = None, up: Impairment | None = None,
               down: Impairment | None = None) -> None:
        self.up, self.down = up or both or CLEAN, down or both or CLEAN

    def rewrite_offer(self, sdp: str) -> str:
        """The client's candidates -> the relay's server-facing socket (what the server sees)."""
        return CANDIDATE_PORT.sub(lambda m: self._swap(m, upstream=True), sdp)

    def rewrite_answer(self, sdp: str) -> str:
        """The server's candidates -> the relay's client-facing socket (what the client sees)."""
        return CANDIDATE_PORT.sub(lambda m: self._swap(m, upstream=False), sdp)

    def _swap(self, match: re.Match[str], upstream: bool) -> str:
        # An offer may carry a candidate per m-line; BUNDLE uses the first one's transport.
        real = (LOOPBACK, int(match.group(2)))
        if upstream:
            self.client_addr = self.client_addr or real
        else:
            self.server_addr = self.server_addr or real
        port = (self._server_side if upstream else self._client_side).port
        return f"{match.group(1)}{port}{match.group(3)}"

    def forward(self, data: bytes, upstream: bool) -> None:
        impairment = self.up if upstream else self.down
        out, to = (self._server_side, self.server_addr) if upstream else (self._client_side, self.client_addr)
        if to is None or self._random.random() < impairment.loss:
            self.stats.dropped += 1
            return
        copies = 2 if self._random.random() < impairment.duplicate else 1
        for _ in range(copies):
            delay_ms = impairment.delay_ms + self._random.uniform(-1, 1) * impairment.jitter_ms
            self._send_later(out, data, to, max(delay_ms, 0.0) / 1000)

    def _send_later(self, side: _Side, data: bytes, to: tuple[str, int], delay_s: float) -> None:
        transport = side.transport
        if transport is None or transport.is_closing():
            return
        self.stats.forwarded += 1
        if delay_s <= 0:
            transport.sendto(data, to)
        else:
            asyncio.get_running_loop().call_later(delay_s, self._send_now, transport, data, to)

    @staticmethod
    def _send_now(transport: asyncio.DatagramTransport, data: bytes, to: tuple[str, int]) -> None:
        if not transport.is_closing():
            transport.sendto(data, to)


@asynccontextmanager
async def relayed(server_url: str, seed: int = 1) -> AsyncIterator[tuple[str, UdpRelay]]:
    """A signalling proxy (its URL) for `server_url` whose sessions' media go through a relay."""
    relay = UdpRelay(seed)
    await relay.open()
    http = aiohttp.ClientSession()

    async def proxy(request: web.Request) -> web.Response:
        body = await request.text()
        if request.method == "POST" and request.path == "/v1/sessions":
            body = relay.rewrite_offer(body)
        async with http.request(request.method, server_url + request.path_qs, data=body,
                                headers={k: v for k, v in request.headers.items()
                                         if k in ("Content-Type", "Authorization")}) as response:
            text = await response.text()
            if request.method == "POST" and response.status == 201:
                text = relay.rewrite_answer(text)
            headers = {k: v for k, v in response.headers.items() if k in ("Location", "Content-Type")}
            return web.Response(status=response.status, text=text, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}", relay
    finally:
        await runner.cleanup()
        await http.close()
        relay.close()
