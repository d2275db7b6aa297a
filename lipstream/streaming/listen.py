"""Before `lipstream serve` starts: can it listen where it was asked?

Start-up analyses the avatar, times the engine and spawns workers, seconds of work; a port that is
taken, out of range, or a host that is no address of this machine is said first, in one line.
"""

import errno
import socket

from lipstream.errors import LipstreamError

MAX_PORT = 65_535  # TCP's 16 bits; 0 asks the system for any free port


def check_listen(host: str, port: int) -> None:
    """Raise LipstreamError unless a server can bind `host`:`port` now (every address it names)."""
    if not 0 <= port <= MAX_PORT:
        raise LipstreamError(f"--port {port}: use 1 to {MAX_PORT} (0: any free port)")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LipstreamError(f"--host {host}: not an address or name this machine can resolve "
                             f"({exc.strerror}): use 127.0.0.1, 0.0.0.0 or one of its addresses") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            try:
                probe.bind(address)
            except OSError as exc:
                fix = ("another program listens there: choose another --port" if exc.errno == errno.EADDRINUSE
                       else "choose another --host or --port")
                raise LipstreamError(f"cannot listen on {host} port {port}: {exc.strerror}: {fix}") from None
