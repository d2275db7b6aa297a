"""When a peer was last heard from: every datagram its ICE connection receives, of any kind.

A live peer keeps sending even when it sends no media: RTCP reports and STUN consent checks (at
least every 5 s from aiortc and browsers; NOTES.md), so the transport, not the voice, says whether
it is there. aiortc itself notices a silent peer only when ICE consent expires (~30 s).

aioice hands each datagram a candidate's socket receives to its `Connection`: STUN requests (the
peer's connectivity and consent checks) to `request_received`, everything else (DTLS, SRTP, SRTCP)
to `data_received`. This adapter wraps those two methods on the connection of each of a peer
connection's ICE transports; it is the one place that reaches into aiortc and aioice for this.
Datagrams are counted before they are authenticated: someone spraying the port could hold a
session past the timeout, but not past aiortc's own consent expiry (~30 s), which ends it.
"""

from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection

INBOUND_METHODS = ("data_received", "request_received")


def on_every_datagram(pc: RTCPeerConnection, heard: Callable[[], None]) -> None:
    """Call `heard()` for every datagram that reaches `pc`'s ICE connections from now on.

    Call it after the remote description is applied (the transports exist from then on).
    """
    for connection in _ice_connections(pc):
        for name in INBOUND_METHODS:
            _tap(connection, name, heard)


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice connections under the peer connection (one when the offer bundles)."""
    dtls_transports = {t.sender.transport for t in pc.getTransceivers()} - {None}
    ice_transports = {dtls.transport for dtls in dtls_transports}
    return [getattr(ice, "_connection") for ice in ice_transports]  # noqa: B009  (private in aiortc)


def _tap(connection: Any, name: str, heard: Callable[[], None]) -> None:
    original = getattr(connection, name)

    def tapped(*args: Any) -> Any:
        heard()
        return original(*args)

    setattr(connection, name, tapped)
