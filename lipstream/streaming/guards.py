"""Middlewares that decide who may reach the routes at all (policy in auth.py)."""

from aiohttp import web

from lipstream.streaming.auth import host_allowed, origin_allowed
from lipstream.streaming.routes import STATE, VIEWER_TOKENS, ApiError, Handler

VIEWER_TOKEN_HEADER = "Lipstream-Viewer-Token"


@web.middleware
async def same_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests that other web sites make through a browser on this machine (auth.py)."""
    state = request.app[STATE]
    if state.token is None and not host_allowed(request.host, state.config.host, _local_port(request)):
        raise ApiError(421, f"this server does not answer for host {request.host!r}: open it as "
                            f"http://localhost:{_local_port(request)}/")
    if not origin_allowed(request):
        raise ApiError(403, f"requests from pages of {request.headers['Origin']} are refused: "
                            "use the page this server serves, or a client that is not a web page")
    return await handler(request)


def _local_port(request: web.Request) -> int:
    """The port the request came in on (the configured one may be 0: any free port)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return int(sockname[1]) if sockname else request.app[STATE].config.port


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
