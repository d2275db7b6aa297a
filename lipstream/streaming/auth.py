"""Who may do what on `lipstream serve`.

- The server token (`--token`, or generated for a non-loopback bind) allows everything. Without one
  the server is bound to loopback, and the Host and Origin checks keep other web sites out
  (DNS rebinding, cross-site form posts): a browser on this machine visiting a hostile page must not
  be able to drive the server.
- A viewer token, an HMAC of one session id under a secret drawn at start-up, allows watching that
  session only: adding and removing its viewers, and reading its status. It is what viewer links
  (OBS) carry, so handing one out does not hand out the server.
"""

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # the names a browser uses for this machine
DEFAULT_HTTP_PORT = 80  # a Host header without a port means this one
SECRET_BYTES = 32
VIEWER_TOKEN_BYTES = 24  # of the HMAC-SHA256: 192 bits, 32 URL-safe characters
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname we cannot vouch for, or "" / "0.0.0.0"-like wildcards


def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token to require -> (token, generated). None means no authentication (loopback only)."""
    if token:
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


def bearer(request: web.Request) -> str:
    """The token of an `Authorization: Bearer <token>` header, or ""."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def same_secret(given: str, expected: str) -> bool:
    # compare_digest: the time taken does not reveal how much of a guess was right
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def bearer_ok(request: web.Request, token: str | None) -> bool:
    return token is None or same_secret(bearer(request), token)


@dataclass(frozen=True)
class ViewerTokens:
    """Tokens for watching one session; they need no storage and die with the server's secret."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(SECRET_BYTES), repr=False)

    def issue(self, session_id: str) -> str:
        digest = hmac.new(self.secret, b"viewer:" + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:VIEWER_TOKEN_BYTES]).decode()

    def valid(self, session_id: str, given: str) -> bool:
        return same_secret(given, self.issue(session_id))


def host_allowed(host_header: str, bound_host: str, port: int) -> bool:
    """Whether a Host header names this loopback server (anything else is DNS rebinding or a
    misdirected request): a loopback name or the bound address, with the port."""
    bound = f"[{bound_host}]" if ":" in bound_host else bound_host
    names = {*LOOPBACK_HOSTS, bound.lower()}
    allowed = {f"{name}:{port}" for name in names}
    if port == DEFAULT_HTTP_PORT:
        allowed |= names
    return host_header.lower() in allowed


def origin_allowed(request: web.Request) -> bool:
    """A state-changing request from a browser must come from a page of this server. Requests
    without an Origin (curl, OBS, aiortc clients) are not from a web page and pass."""
    origin = request.headers.get("Origin")
    if origin is None or request.method not in STATE_CHANGING_METHODS:
        return True
    # host[:port] only: behind a TLS proxy the page is https while this server sees http. "null"
    # (sandboxed frames, file: pages) has no host and is refused.
    return urlsplit(origin).netloc.lower() == request.host.lower()
