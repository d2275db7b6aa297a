"""The remote ICE candidates an offer may list (lipstream/streaming/candidates.py): aioice sends
STUN checks to each, so an offer that lists third parties' addresses turned the server into a
packet sprayer. Real offers pass; too many candidates, or addresses that name no host, are
refused with a reason before any peer connection (or slot) exists."""

import asyncio
import socket

import pytest

from lipstream.engine.avatar import Avatar
from lipstream.streaming.candidates import MAX_REMOTE_CANDIDATES
from lipstream.streaming.offer import OfferError, check_session_offer, check_viewer_offer
from lipstream.streaming.server import ServeConfig
from tests.serving import SDP, client_offer, expect, serving

pytestmark = pytest.mark.usefixtures("loopback")

CRLF = "\r\n"
HOSTILE_CANDIDATES = 200
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python names it from 3.13 on
LISTEN_S = 1.5  # aioice's first checks go out within a few tens of ms; retransmissions follow
# What Chromium 156 on this machine lists (mDNS names for its host addresses), and the TCP and
# relay forms it writes elsewhere (port 9 for active TCP, raddr 0.0.0.0 for a hidden base).
CHROMIUM_CANDIDATES = [
    "3183177164 1 udp 2113937151 718929ac-0b26-41f7-9a10-374962c707b3.local 39595 typ host generation 0 "
    "network-cost 999",
    "1234 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active generation 0 network-cost 50",
    "5678 1 udp 41885439 203.0.113.9 3478 typ relay raddr 0.0.0.0 rport 0 generation 0 network-cost 999",
]


def with_candidates(sdp: str, values: list[str]) -> str:
    """The offer with `values` as a=candidate lines of its first m-line."""
    lines = sdp.split(CRLF)
    at = next(i for i, line in enumerate(lines) if line.startswith("a=mid:")) + 1
    return CRLF.join(lines[:at] + [f"a=candidate:{v}" for v in values] + lines[at:])


def host(address: str, port: int = 5000, foundation: int = 1) -> str:
    return f"{foundation} 1 udp 2130706431 {address} {port} typ host"


async def test_real_candidates_pass_and_hosts_no_peer_can_be_at_are_refused() -> None:
    session, viewer = await client_offer("sendrecv", "recvonly"), await client_offer("recvonly", "recvonly")
    check_session_offer(with_candidates(session, CHROMIUM_CANDIDATES))
    check_viewer_offer(with_candidates(viewer, CHROMIUM_CANDIDATES))
    refused = {
        "0.0.0.0": "names no single host", "::": "names no single host",
        "224.0.0.251": "names no single host", "239.255.255.250": "names no single host",
        "ff02::1": "names no single host", "255.255.255.255": "names no single host",
    }
    for address, reason in refused.items():
        for check, offer in ((check_session_offer, session), (check_viewer_offer, viewer)):
            with pytest.raises(OfferError, match=reason):
                check(with_candidates(offer, [host(address)]))
    for malformed in ("1 1 udp 1 127.0.0.1 5000", "1 1 udp x 127.0.0.1 5000 typ host",
                      "1 1 udp 1 127.0.0.1 \u00b2 typ host", "1 1 udp 1 127.0.0.1 5000 type host"):
        with pytest.raises(OfferError, match="is not '<foundation>"):
            check_session_offer(with_candidates(session, [malformed]))


async def test_a_browsers_worth_of_candidates_passes_and_one_more_is_refused() -> None:
    session = await client_offer("sendrecv", "recvonly")
    present = session.count("a=candidate:")
    enough = [host(f"10.0.{n // 250}.{n % 250 + 1}", foundation=n)
              for n in range(MAX_REMOTE_CANDIDATES - present)]
    check_session_offer(with_candidates(session, enough))
    with pytest.raises(OfferError, match=f"more than the {MAX_REMOTE_CANDIDATES} a browser lists"):
        check_session_offer(with_candidates(session, [*enough, host("10.9.9.9")]))


class Sink:
    """A UDP port on every 127.x address: the 'third parties' a hostile offer names."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)  # each datagram's destination
        self.sock.bind(("0.0.0.0", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def reached(self) -> set[str]:
        """The addresses sent a datagram so far."""
        found = set()
        while True:
            try:
                _, ancillary, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return found
            for level, kind, data in ancillary:
                if (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO):
                    found.add(socket.inet_ntoa(data[8:12]))  # in_pktinfo.ipi_addr: the header's destination


async def test_an_offer_naming_hundreds_of_third_parties_is_refused_before_a_packet_is_sent(
        avatar: Avatar) -> None:
    """Once 201: the server sent STUN checks to every address listed (a reflection vector) and kept
    a candidate pair for each, for as long as the session stayed up."""
    sink = Sink()
    third_parties = [host(f"127.0.{n // 250}.{n % 250 + 2}", sink.port, n) for n in range(HOSTILE_CANDIDATES)]
    offer = with_candidates(await client_offer("sendrecv", "recvonly"), third_parties)
    try:
        async with serving(ServeConfig(max_sessions=2), avatar) as (server, http):
            async with http.post(f"{server.url}/v1/sessions", data=offer, headers=SDP) as response:
                await expect(response, 400, f"lists {offer.count('a=candidate:')} ICE candidates")
            await asyncio.sleep(LISTEN_S)
            reached = sink.reached()
            async with http.get(f"{server.url}/healthz") as health:
                assert (await health.json())["sessions"] == 0
    finally:
        sink.sock.close()
    assert not reached, f"the server sent packets to {len(reached)} addresses the offer named"
