"""Routes of sessions (WHIP's shape) and of their viewers (WHEP's shape): `/v1/sessions...`.

Handlers check, in order: token, body size and type, the offer (offer.py), capacity; only then
do they spend work.
"""

from collections.abc import Callable

from aiohttp import web

from lipstream.streaming.api import ApiError, authorize, authorize_viewer, read_body
from lipstream.streaming.endings import in_words
from lipstream.streaming.offer import OfferError, check_session_offer, check_viewer_offer
from lipstream.streaming.session import Session, SessionEnded
from lipstream.streaming.state import AtCapacity, ServerState

SDP = "application/sdp"
# When aiortc refuses an offer that offer.py let through; its own messages are internals.
OFFER_REFUSED = ("the WebRTC stack could not use this SDP offer: send the offer exactly as your "
                 "WebRTC library's createOffer() wrote it (audio sendrecv, video recvonly, bundled)")


def add_session_routes(app: web.Application) -> None:
    app.router.add_post("/v1/sessions", post_session)
    app.router.add_get("/v1/sessions/{id}", get_session)
    app.router.add_delete("/v1/sessions/{id}", delete_session)
    app.router.add_post("/v1/sessions/{id}/viewers", post_viewer)
    app.router.add_delete("/v1/sessions/{id}/viewers/{viewer}", delete_viewer)


async def read_offer(request: web.Request, limit: int, check: Callable[[str], object]) -> str:
    """The SDP offer of the body (at most `limit` bytes), checked by `check` (offer.py) before any
    work is spent on it. The front of `--workers` reads it so too."""
    if request.content_type != SDP:
        raise ApiError(415, f"send the SDP offer with Content-Type: {SDP} (got {request.content_type})")
    body = await read_body(request, limit, "the SDP offer")
    try:
        sdp = body.decode("utf-8")
        check(sdp)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed SDP: the offer is not UTF-8 text") from None
    except OfferError as exc:
        raise ApiError(400, str(exc)) from None
    return sdp


def _session(state: ServerState, request: web.Request) -> Session:
    session = state.sessions.get(request.match_info["id"])
    if session is None or session.ending:
        raise _no_session(request)
    return session


def _no_session(request: web.Request) -> ApiError:
    return ApiError(404, f"no session {request.match_info['id']}: it ended or never existed")


async def post_session(request: web.Request) -> web.Response:
    state = authorize(request)
    offer = await read_offer(request, state.config.max_sdp_bytes, check_session_offer)
    try:
        async with state.slot():
            session = await _new_session(state, request.query.get("avatar"))
            answer = await _answer(session, offer, state.config.retry_after_s)
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


async def _answer(session: Session, offer: str, retry_after_s: int) -> str:
    """The session's answer; a session that cannot answer is closed (its slot freed) first."""
    try:
        return await session.answer(offer)
    except Exception:
        if session.ending:  # closed under the answer (the server is shutting down): not the offer's fault
            raise ApiError(503, f"the server closed the session while answering (it is shutting down): "
                                f"retry in {retry_after_s} s", {"Retry-After": str(retry_after_s)}) from None
        await session.close("bad_offer")  # offer.py passed it, aiortc refused it: its message is internals
        raise ApiError(400, OFFER_REFUSED) from None
    except BaseException:  # cancelled mid-answer (server shutting down): leave nothing behind
        session.end("cancelled")
        raise


async def get_session(request: web.Request) -> web.Response:
    """A session's state, or why it ended (the page and viewer page tell their user)."""
    state = authorize_viewer(request)
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
    state = authorize(request)
    await _session(state, request).close("deleted")
    return web.Response(status=204)


async def post_viewer(request: web.Request) -> web.Response:
    state = authorize_viewer(request)
    _session(state, request)  # 404 before reading a body for a session that is not there
    offer = await read_offer(request, state.config.max_sdp_bytes, check_viewer_offer)
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
    state = authorize_viewer(request)
    if not await _session(state, request).remove_viewer(request.match_info["viewer"]):
        raise ApiError(404, f"no viewer {request.match_info['viewer']} in this session")
    return web.Response(status=204)
