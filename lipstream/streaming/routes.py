"""HTTP routes of `lipstream serve` (shapes of DESIGN.md: WHIP for sessions, WHEP for viewers).

Handlers check, in order: token, body size and type, the offer (offer.py), capacity; only then
do they spend work.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import BodyPartReader, web

from lipstream.errors import PhotoError
from lipstream.streaming.auth import ViewerTokens, bearer, bearer_ok
from lipstream.streaming.avatars import UploadsBusy
from lipstream.streaming.bodies import BodyPace, BodyTooSlow
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.endings import in_words
from lipstream.streaming.metrics import PROMETHEUS_CONTENT_TYPE
from lipstream.streaming.offer import OfferError, check_session_offer, check_viewer_offer
from lipstream.streaming.session import Session, SessionEnded
from lipstream.streaming.state import AtCapacity, ServerState

STATE = web.AppKey("state", ServerState)
# The config of whichever app serves the request: a worker's server or the front of `--workers`.
CONFIG = web.AppKey("config", ServeConfig)
VIEWER_TOKENS = web.AppKey("viewer_tokens", ViewerTokens)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SDP = "application/sdp"
RAW_BYTES = "application/octet-stream"
READ_CHUNK_BYTES = 64 * 1024
# When aiortc refuses an offer that offer.py let through; its own messages are internals.
OFFER_REFUSED = ("the WebRTC stack could not use this SDP offer: send the offer exactly as your "
                 "WebRTC library's createOffer() wrote it (audio sendrecv, video recvonly, bundled)")


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
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}", headers)


def add_routes(app: web.Application, static: Path) -> None:
    app.router.add_get("/", _page(static / "index.html"))
    app.router.add_get("/view/{id}", _page(static / "viewer.html"))
    if static.is_dir():
        app.router.add_static("/static", static)
    app.router.add_post("/v1/sessions", post_session)
    app.router.add_get("/v1/sessions/{id}", get_session)
    app.router.add_delete("/v1/sessions/{id}", delete_session)
    app.router.add_post("/v1/sessions/{id}/viewers", post_viewer)
    app.router.add_delete("/v1/sessions/{id}/viewers/{viewer}", delete_viewer)
    app.router.add_post("/v1/avatars", post_avatar)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not path.is_file():
            raise ApiError(404, f"page {path.name} is not installed with this copy of lipstream")
        return web.FileResponse(path)

    return handler


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


async def read_offer(request: web.Request, state: ServerState, check: Callable[[str], object]) -> str:
    """The SDP offer of the body, checked by `check` (offer.py) before any work is spent on it."""
    if request.content_type != SDP:
        raise ApiError(415, f"send the SDP offer with Content-Type: {SDP} (got {request.content_type})")
    body = await read_body(request, state.config.max_sdp_bytes, "the SDP offer")
    try:
        sdp = body.decode("utf-8")
        check(sdp)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed SDP: the offer is not UTF-8 text") from None
    except OfferError as exc:
        raise ApiError(400, str(exc)) from None
    return sdp


def _authorize(request: web.Request) -> ServerState:
    """Anything: the server token (when the server has one)."""
    state = request.app[STATE]
    if not bearer_ok(request, state.token):
        raise _unauthorized("missing or wrong token: send 'Authorization: Bearer <token>' "
                            "(printed by lipstream serve at start-up)")
    return state


def _authorize_viewer(request: web.Request) -> ServerState:
    """Watching session {id}: the server token, or that session's viewer token."""
    state = request.app[STATE]
    session_id = request.match_info["id"]
    if not (bearer_ok(request, state.token) or request.app[VIEWER_TOKENS].valid(session_id, bearer(request))):
        raise _unauthorized(f"missing or wrong token: send 'Authorization: Bearer <token>' with the "
                            f"viewer token of session {session_id} (its viewer link has it)")
    return state


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": "Bearer"})


def _session(state: ServerState, request: web.Request) -> Session:
    session = state.sessions.get(request.match_info["id"])
    if session is None or session.ending:
        raise _no_session(request)
    return session


def _no_session(request: web.Request) -> ApiError:
    return ApiError(404, f"no session {request.match_info['id']}: it ended or never existed")


async def post_session(request: web.Request) -> web.Response:
    state = _authorize(request)
    offer = await read_offer(request, state, check_session_offer)
    try:
        async with state.slot():
            session = await _new_session(state, request.query.get("avatar"))
            answer = await _answer(session, offer)
    except AtCapacity:
        state.metrics.sessions_rejected.inc()
        retry = str(state.config.retry_after_s)
        raise ApiError(503, f"server is at capacity ({state.max_sessions} sessions): retry in {retry} s",
                       {"Retry-After": retry}) from None
    return web.Response(status=201, text=answer, content_type=SDP,
                        headers={"Location": f"/v1/sessions/{session.id}"})


async def _new_session(state: ServerState, avatar_id: str | None) -> Session:
    """A session registered under its id (it holds its slot until it ends and is forgotten)."""
    avatar = await state.avatars.get(avatar_id)
    if avatar is None:
        raise ApiError(404, f"no avatar {avatar_id}: upload the photo with POST /v1/avatars first")
    engine, _ = await state.pool.run(lambda: state.engine_factory(avatar))
    session = Session(engine, state.pool, state.metrics, state.clock, state.config.session,
                      on_end=state.forget)
    state.sessions[session.id] = session
    return session


async def _answer(session: Session, offer: str) -> str:
    """The session's answer; a session that cannot answer is closed (its slot freed) first."""
    try:
        return await session.answer(offer)
    except Exception:  # offer.py passed it, aiortc refused it: its message is internals
        await session.close("bad_offer")
        raise ApiError(400, OFFER_REFUSED) from None
    except BaseException:  # cancelled mid-answer (server shutting down): leave nothing behind
        session.end("cancelled")
        raise


async def get_session(request: web.Request) -> web.Response:
    """A session's state, or why it ended (the page and viewer page tell their user)."""
    state = _authorize_viewer(request)
    session_id = request.match_info["id"]
    session = state.sessions.get(session_id)
    if session is not None and not session.ending:
        live = "live" if session.media.started else "connecting"
        return web.json_response({"id": session_id, "state": live,
                                  "viewers": len(session.viewers), "age_s": round(session.age_s, 1)})
    code = session.end_reason if session is not None else state.ended.get(session_id)
    if code is None and session is None:
        raise ApiError(404, f"no session {session_id}: it never existed or ended long ago")
    reason = in_words(code)
    return web.json_response({"error": f"session {session_id} has ended: {reason}", "reason": reason},
                             status=404)


async def delete_session(request: web.Request) -> web.Response:
    state = _authorize(request)
    await _session(state, request).close("deleted")
    return web.Response(status=204)


async def post_viewer(request: web.Request) -> web.Response:
    state = _authorize_viewer(request)
    _session(state, request)  # 404 before reading a body for a session that is not there
    offer = await read_offer(request, state, check_viewer_offer)
    session = _session(state, request)  # it may have ended while the body arrived
    if len(session.viewers) >= session.config.max_viewers:
        raise ApiError(503, f"session has its maximum of {session.config.max_viewers} viewers",
                       {"Retry-After": str(state.config.retry_after_s)})
    try:
        viewer_id, answer = await session.add_viewer(offer)
    except SessionEnded:
        raise _no_session(request) from None
    except Exception:  # as for sessions
        raise ApiError(400, OFFER_REFUSED) from None
    return web.Response(status=201, text=answer, content_type=SDP,
                        headers={"Location": f"/v1/sessions/{session.id}/viewers/{viewer_id}"})


async def delete_viewer(request: web.Request) -> web.Response:
    state = _authorize_viewer(request)
    if not await _session(state, request).remove_viewer(request.match_info["viewer"]):
        raise ApiError(404, f"no viewer {request.match_info['viewer']} in this session")
    return web.Response(status=204)


async def post_avatar(request: web.Request) -> web.Response:
    state = _authorize(request)
    data = await _read_photo(request, state.avatars.limits.max_bytes)
    try:
        avatar_id = await state.avatars.add(data)
    except PhotoError as exc:
        raise ApiError(422, str(exc)) from None
    except UploadsBusy as exc:
        raise ApiError(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
    return web.json_response({"id": avatar_id}, status=201,
                             headers={"Location": f"/v1/avatars/{avatar_id}"})


async def _read_photo(request: web.Request, limit: int) -> bytes:
    """A raw image body, or the first file part of a multipart form (a browser's <input type=file>).

    Refuses text/plain, form-encoded and untyped bodies: a web page can send those to any site
    without a CORS preflight. application/octet-stream needs one, and is what the page sends for
    a file the browser could not type.
    """
    declared = request.headers.get("Content-Type", "")
    if declared and request.content_type == "multipart/form-data":
        async with body_pace(request, "the photo") as pace:
            data = await _read_file_part(request, limit, pace)
    elif declared and (request.content_type.startswith("image/") or request.content_type == RAW_BYTES):
        data = await read_body(request, limit, "the photo")
    else:
        got = request.content_type if declared else "none"
        raise ApiError(415, f"a photo upload needs Content-Type image/* (got {got}), "
                            "or a multipart/form-data form with the photo as a file field")
    if not data:
        raise ApiError(400, "the upload is empty: send a JPEG or PNG photo")
    return data


async def _read_file_part(request: web.Request, limit: int, pace: BodyPace) -> bytes:
    reader = await request.multipart()
    part = await pace.read(reader.next())
    while part is not None and not (isinstance(part, BodyPartReader) and part.filename):
        part = await pace.read(reader.next())
    if not isinstance(part, BodyPartReader):
        raise ApiError(400, "the form has no file: send the photo as a file field")
    data = bytearray()
    while chunk := await pace.read(part.read_chunk(READ_CHUNK_BYTES)):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the photo is larger than the limit of {limit // 1024} KB")
    return bytes(data)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({
        "status": "ok",
        "sessions": len(state.sessions),
        "max_sessions": state.max_sessions,
        "viewers": sum(len(s.viewers) for s in state.sessions.values()),
    })


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
