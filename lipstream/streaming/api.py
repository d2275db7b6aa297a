"""What every route of `lipstream serve` shares: the app keys, refusals as JSON, bounded and
paced body reading, and who may call (auth.py holds the policy, this applies it per request).

Its own module, so that the route modules, the guards and the front of `--workers` all import it
without importing one another.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from lipstream.streaming.auth import ViewerTokens, bearer, bearer_ok
from lipstream.streaming.bodies import BodyPace, BodyTooSlow
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.state import ServerState

STATE = web.AppKey("state", ServerState)
# The config of whichever app serves the request: a worker's server or the front of `--workers`.
CONFIG = web.AppKey("config", ServeConfig)
VIEWER_TOKENS = web.AppKey("viewer_tokens", ViewerTokens)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_CHUNK_BYTES = 64 * 1024
BODY_UNREADABLE = ("the request body could not be decoded: its Content-Encoding does not match its bytes; "
                   "send the body as it is, without a Content-Encoding header")


class ApiError(Exception):
    """An answer to a request that cannot be served: status + a message saying what to change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every 4xx/5xx as JSON, including aiohttp's own (unknown route, wrong method, too large)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.headers)
        if not request.content.is_eof():  # a refused or dribbled body is not worth reading on
            response.force_close()
        return response
    except web.RequestPayloadError:  # aiohttp could not decode the body (a Content-Encoding it lies about)
        # aiohttp's parser is done with this body but leaves it open: its read of the rest after the
        # answer would raise this again, logged as an unhandled exception with a traceback
        request.content.feed_eof()
        response = error_response(400, BODY_UNREADABLE)
        response.force_close()  # the rest of the body cannot be framed
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}", headers)


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """The whole body, or 413 as soon as it exceeds `limit` (never buffer an attacker's gigabyte),
    or 408 when it has not all arrived within the body timeout (never wait on a dribble)."""
    too_large = ApiError(413, f"{what} is larger than the limit of {limit // 1024} KB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async with body_pace(request, what) as pace:
        while chunk := await pace.read(request.content.read(READ_CHUNK_BYTES)):
            data += chunk
            if len(data) > limit:
                raise too_large
    return bytes(data)


@contextlib.asynccontextmanager
async def body_pace(request: web.Request, what: str) -> AsyncIterator[BodyPace]:
    """408 when the body arrives too slowly (bodies.py)."""
    config = request.app[CONFIG]
    pace = BodyPace(config.body_timeout_s, config.min_body_bytes_per_s)
    try:
        yield pace
    except BodyTooSlow:
        raise ApiError(408, f"{what} arrived too slowly: send it within {pace.grace_s:g} s, or faster "
                            f"than {pace.min_bytes_per_s // 1024} KB/s") from None


def authorize(request: web.Request) -> ServerState:
    """Anything: the server token (when the server has one)."""
    state = request.app[STATE]
    require_token(request, state.token)
    return state


def require_token(request: web.Request, token: str | None) -> None:
    """401 unless the request carries `token` (None: no token is needed)."""
    if not bearer_ok(request, token):
        raise _unauthorized("missing or wrong token: send 'Authorization: Bearer <token>' "
                            "(printed by lipstream serve at start-up)")


def authorize_viewer(request: web.Request) -> ServerState:
    """Watching session {id}: the server token, or that session's viewer token."""
    state = request.app[STATE]
    session_id = request.match_info["id"]
    if not (bearer_ok(request, state.token) or request.app[VIEWER_TOKENS].valid(session_id, bearer(request))):
        raise _unauthorized(f"missing or wrong token: send 'Authorization: Bearer <token>' with the "
                            f"viewer token of session {session_id} (its viewer link has it)")
    return state


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": "Bearer"})
