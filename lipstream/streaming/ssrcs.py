"""How many RTP streams (SSRCs) a peer may send from: each costs state that lives as long as the
connection.

Receiving, libsrtp clones a stream context for every SSRC it authenticates (384 bytes, measured,
kept until the connection closes, in a list it searches linearly for each packet: after 50,000
SSRCs a packet of the first stream took 1.5 ms to decrypt instead of 4 us), and aiortc's RTP router
remembers each one it routes (~70 bytes). A hostile peer that writes a new SSRC into every packet
grew both without bound. A real peer sends from a handful, fixed when it connects: aiortc and
Chromium use one for their microphone and one for the reports of each stream they receive. So a
peer past `MAX_PEER_SSRCS` is broken or hostile: its packets from new SSRCs are dropped, and its
connection is ended (`churned` is called once), which frees what libsrtp holds.

The count is taken after SRTP authentication, on what libsrtp kept: a third party that cannot
encrypt for the connection cannot end it. This adapter wraps the two methods of aiortc's DTLS
transport that receive decrypted RTP and RTCP; it is the one place that reaches into aiortc for it.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection

SSRCS_AT_START = 4  # the microphone, reports for audio and for video received, one spare (RTX/FEC)
STREAM_RESTARTS = 60  # a gateway that restarts its stream once a minute, for an hour
MAX_PEER_SSRCS = SSRCS_AT_START + STREAM_RESTARTS  # 64: ~29 KB of libsrtp and aiortc state
SSRC_BYTES = 4
RTP_SSRC_OFFSET = 8  # RFC 3550 5.1: after the first byte, payload type, sequence number, timestamp
RTCP_SSRC_OFFSET = 4  # the sender's SSRC of the compound's first packet (what libsrtp keys it by)


class SsrcCount:
    """The distinct SSRCs a peer sent from, up to `limit`; `churned()` once when one more comes."""

    def __init__(self, limit: int, churned: Callable[[], None]) -> None:
        self.limit, self.churned = limit, churned
        self.seen: set[int] = set()
        self.over = False

    def admits(self, ssrc: int) -> bool:
        """True for a known SSRC or a new one within the limit (it is then counted)."""
        if ssrc in self.seen:
            return True
        if len(self.seen) < self.limit:
            self.seen.add(ssrc)
            return True
        if not self.over:
            self.over = True
            self.churned()
        return False


def on_ssrc_churn(pc: RTCPeerConnection, limit: int, churned: Callable[[], None]) -> SsrcCount:
    """Count the SSRCs `pc`'s peer sends from; past `limit`, drop theirs and call `churned()` once.

    Call it after the remote description is applied (the transports exist from then on).
    """
    count = SsrcCount(limit, churned)
    dtls_transports = {t.receiver.transport for t in pc.getTransceivers()} - {None}
    for dtls in dtls_transports:
        _tap(dtls, "_handle_rtp_data", RTP_SSRC_OFFSET, count)
        _tap(dtls, "_handle_rtcp_data", RTCP_SSRC_OFFSET, count)
    return count


def _tap(dtls: Any, name: str, offset: int, count: SsrcCount) -> None:
    original: Callable[..., Awaitable[None]] = getattr(dtls, name)

    async def tapped(data: bytes, *args: Any, **kwargs: Any) -> None:
        ssrc = data[offset : offset + SSRC_BYTES]
        if len(ssrc) < SSRC_BYTES or count.admits(int.from_bytes(ssrc, "big")):  # short: aiortc refuses it
            await original(data, *args, **kwargs)

    setattr(dtls, name, tapped)
