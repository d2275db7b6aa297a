"""Middlewares that decide who may reach the routes at all (policy in auth.py)."""

from aiohttp import web

from lipstream.streaming.api import STATE, VIEWER_TOKENS, ApiError, Handler
from lipstream.streaming.auth import host_allowed, origin_allowed

VIEWER_TOKEN_HEADER = "Lipstream-Viewer-Token"


@web.middleware
async def same_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests that other web sites make through a browser on this machine (auth.py).

    A worker behind `serve --workers` hears only its front, over a private unix socket: the
    front made this check on the client's own connection (the one whose port the Host names).
    """
    if not from_front(request):
        state = request.app[STATE]
        check_same_site(request, state.token, state.config.host, state.config.port)
    return await handler(request)


def check_same_site(request: web.Request, token: str | None, bound_host: str, port: int) -> None:
    """Raise ApiError 421 for a Host that is not this server (without a token), 403 for a
    state-changing request from another site's page."""
    port = _local_port(request) or port
    if token is None and not host_allowed(request.host, bound_host, port):
        raise ApiError(421, f"this server does not answer for host {request.host!r}: open it as "
                            f"http://localhost:{port}/")
    if not origin_allowed(request):
        raise ApiError(403, f"requests from pages of {request.headers['Origin']} are refused: "
                            "use the page this server serves, or a client that is not a web page")


def from_front(request: web.Request) -> bool:
    """Whether the request came over a unix socket (only a front process connects to one)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return isinstance(sockname, str)


def _local_port(request: web.Request) -> int | None:
    """The TCP port the request came in on (the configured one may be 0: any free port)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if isinstance(sockname, tuple) else None


@web.middleware
async def viewer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A new session's answer carries a token for watching it (auth.ViewerTokens), when tokens
    are on. Added here, beside the other auth, so session creation need not know about it."""
    response = await handler(request)
    created = request.method == "POST" and request.path == "/v1/sessions" and response.status == 201
    if created and request.app[STATE].token is not None:
        session_id = response.headers["Location"].rsplit("/", 1)[-1]
        response.headers[VIEWER_TOKEN_HEADER] = request.app[VIEWER_TOKENS].issue(session_id)
    return response
