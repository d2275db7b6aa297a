"""Who may start sessions: an optional bearer token, required whenever the server is reachable
from other machines (a non-loopback bind without a token gets a generated one)."""

import hmac
import ipaddress
import secrets

from aiohttp import web

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


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


def bearer_ok(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken does not reveal how much of a guess was right
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
