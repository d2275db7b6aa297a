"""The remote ICE candidates an offer may list: how many, and which addresses.

aioice sends STUN connectivity checks (with retransmissions) to every address an offer lists and
keeps a candidate pair for each, so an offer is a list of places the server will send packets to:
without a bound, one POST made the server spray any third party. The bound is what a real browser
lists, with room to spare: Chromium 156 here lists 2 per m-line (one interface, IPv4 and IPv6:
6 in an offer with a data channel), aiortc 2 per m-line.

Addresses that name no single host (unspecified, multicast, broadcast) are refused, not dropped:
no WebRTC stack writes them, and an answer to an offer we edited would not be the answer the
client asked for. Only the connection address is checked: Chromium writes `raddr 0.0.0.0` on
candidates whose base address it hides.

The server takes no trickled candidates (there is no PATCH route), so the offer is the only way in.
"""

import ipaddress
import re

INTERFACES = 4  # a laptop: Wi-Fi, Ethernet, a VPN, a container bridge
ADDRESS_FAMILIES = 2  # IPv4, IPv6
KINDS_PER_ADDRESS = 3  # host UDP, host TCP (RFC 6544), server-reflexive
RELAYS = 3  # one TURN server over UDP, TCP and TLS
CANDIDATES_PER_M_LINE = INTERFACES * ADDRESS_FAMILIES * KINDS_PER_ADDRESS + RELAYS  # 27
M_LINES = 3  # audio, video and the control data channel, each with its own (unbundled gathering)
MAX_REMOTE_CANDIDATES = CANDIDATES_PER_M_LINE * M_LINES  # 81
# "<foundation> <component> <transport> <priority> <address> <port> typ <type>" (RFC 8839)
CANDIDATE_FIELDS = 8
ADDRESS_FIELD = 4
NUMBER_FIELDS = (1, 3, 5)  # component, priority, port: aioice reads them with int()
DIGITS = re.compile(r"[0-9]{1,10}")
BROADCAST = ipaddress.ip_address("255.255.255.255")


def candidate_problem(candidates: list[str]) -> str | None:
    """Why the offer's `a=candidate` values cannot be used, or None: a reason a developer can act on."""
    if len(candidates) > MAX_REMOTE_CANDIDATES:
        return (f"the offer lists {len(candidates)} ICE candidates, more than the {MAX_REMOTE_CANDIDATES} "
                "a browser lists: offer each network address once")
    for value in candidates:
        fields = value.split()
        if len(fields) < CANDIDATE_FIELDS or fields[6] != "typ" or \
                not all(DIGITS.fullmatch(fields[i]) for i in NUMBER_FIELDS):
            return (f"the offer's a=candidate:{value[:40]} is not '<foundation> <component> <transport> "
                    "<priority> <address> <port> typ <type>'")
        if not _one_host(fields[ADDRESS_FIELD]):
            return (f"the offer lists an ICE candidate at {fields[ADDRESS_FIELD][:40]}, which names no "
                    "single host (unspecified, multicast or broadcast): list only the peer's own addresses")
    return None


def _one_host(address: str) -> bool:
    """False for an IP address no peer can be at; a name (Chromium's mDNS `....local`) passes."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True
    return not (ip.is_unspecified or ip.is_multicast or ip == BROADCAST)
