"""The routes of `lipstream serve` (shapes of DESIGN.md: WHIP for sessions, WHEP for viewers),
wired in one place: sessions and viewers in session_routes.py, avatars in avatar_routes.py, what
they share in api.py; the pages, /healthz and /metrics here.
"""

from pathlib import Path

from aiohttp import web

from lipstream.streaming.api import STATE, ApiError, Handler
from lipstream.streaming.avatar_routes import add_avatar_routes
from lipstream.streaming.metrics import PROMETHEUS_CONTENT_TYPE
from lipstream.streaming.session_routes import add_session_routes


def add_routes(app: web.Application, static: Path) -> None:
    app.router.add_get("/", _page(static / "index.html"))
    app.router.add_get("/view/{id}", _page(static / "viewer.html"))
    if static.is_dir():
        app.router.add_static("/static", static)
    add_session_routes(app)
    add_avatar_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


def _page(path: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not path.is_file():
            raise ApiError(404, f"page {path.name} is not installed with this copy of lipstream")
        return web.FileResponse(path)

    return handler


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
