"""The HTTP front of `lipstream serve --workers N`: one public API over N worker servers.

The front admits a new session to the worker with the most room (from each worker's /healthz)
and prefixes the worker's session id with the worker's index (`1.Xy3...`), so later requests for
that session (DELETE, viewers, anything under /v1/sessions/{id}) reach the process that owns it.
Everything else is passed through: the workers check tokens, offers and photos, and their JSON
errors reach the client as they wrote them (naming a session by the id the client used). The front
answers itself for what it refuses (every worker full, an id no worker owns; before a body, the
server token on posts of sessions and photos; before capacity, the offer, as a worker would) and
for what it sums (/healthz, /metrics).
Media never passes through here: each worker's SDP answer points the peer at that worker.
"""

import asyncio
import json
import re
from collections import OrderedDict
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from lipstream.streaming.api import CONFIG, ApiError, Handler, json_errors, read_body, require_token
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.front_health import health_response
from lipstream.streaming.front_metrics import FrontMetrics, sum_exposition
from lipstream.streaming.guards import check_same_site
from lipstream.streaming.metrics import PROMETHEUS_CONTENT_TYPE
from lipstream.streaming.offer import check_session_offer
from lipstream.streaming.parse_errors import json_parse_errors
from lipstream.streaming.session_routes import read_offer
from lipstream.streaming.workers import WorkerProcess, Workers, WorkerStartError

SESSIONS_PATH = "/v1/sessions"
AVATARS_PATH = "/v1/avatars"
ID_SEPARATOR = "."  # never in a worker's ids (token_urlsafe: letters, digits, - and _)
# ASCII digits, few: str.isdigit() takes '²', which int() refuses, and int() refuses 5000 digits
WORKER_INDEX = re.compile(r"[0-9]{1,6}")
WORKER_URL = "http://worker"  # the host part is unused: the client is bound to the worker's socket
FORWARDED_HEADERS = ("Authorization", "Host", "Origin", "Content-Type", "Accept")
# Hop-by-hop or recomputed by aiohttp when the front answers
DROPPED_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                             "date", "server"})
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # form boundaries and part headers around a photo
WORKER_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, WorkerStartError)


class WorkerGone(Exception):
    """The worker chosen for a request exited or stopped answering mid-request."""


class UploadedAvatars:
    """The ids the front gave uploads -> each worker's own id, valid while that worker lives."""

    def __init__(self, max_avatars: int) -> None:
        self._max = max_avatars
        self._ids: OrderedDict[str, dict[tuple[int, int], str]] = OrderedDict()  # (index, starts)

    def remember(self, front_id: str, held: list[tuple[WorkerProcess, str]]) -> None:
        self._ids[front_id] = {(w.index, w.starts): i for w, i in held}
        while len(self._ids) > self._max:  # the workers forget as many
            self._ids.popitem(last=False)

    def holders(self, avatar_id: str | None, workers: list[WorkerProcess]) -> list[WorkerProcess]:
        """Of `workers`, those that can animate the avatar (all, for the default or unknown ids)."""
        ids = self._ids.get(avatar_id or "")
        return workers if ids is None else [w for w in workers if (w.index, w.starts) in ids]

    def local_id(self, avatar_id: str, worker: WorkerProcess) -> str:
        return self._ids.get(avatar_id, {}).get((worker.index, worker.starts), avatar_id)


class Front:
    def __init__(self, config: ServeConfig, count: int) -> None:
        self.config = config
        self.counters = FrontMetrics()
        self.workers = Workers(config, count, self.counters)
        self.avatars = UploadedAvatars(config.uploads.max_avatars)
        self.body_limit = config.uploads.max_bytes + MULTIPART_OVERHEAD_BYTES  # a photo's
        # Any other request carries at most an SDP offer: the front reads a body before a worker
        # checks its token, so it must not buffer a photo's worth for anyone who asks.
        self.offer_limit = config.max_sdp_bytes

    def _retry(self, message: str) -> ApiError:
        retry = str(self.config.retry_after_s)
        return ApiError(503, f"{message}: retry in {retry} s", {"Retry-After": retry})

    async def _forward(self, worker: WorkerProcess, request: web.Request, path_qs: str,
                       body: bytes | None) -> web.Response:
        """The request, to one worker; its answer as the client will get it."""
        headers = {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}
        try:
            async with worker.http.request(request.method, WORKER_URL + path_qs, data=body,
                                           headers=headers, allow_redirects=False) as response:
                data = await response.read()
                kept = CIMultiDict((k, v) for k, v in response.headers.items()
                                   if k.lower() not in DROPPED_HEADERS)
                return web.Response(status=response.status, body=data, headers=kept)
        except WORKER_ERRORS:
            raise WorkerGone from None

    async def _body(self, request: web.Request, limit: int, what: str) -> bytes | None:
        return await read_body(request, limit, what) if request.body_exists else None

    async def _by_room(self, avatar_id: str | None) -> list[WorkerProcess]:
        """Running workers that hold the avatar and have room, least loaded first (health read now)."""
        running = self.avatars.holders(avatar_id, self.workers.running())
        if not running:
            raise ApiError(404, f"avatar {avatar_id} was lost when its workers restarted: "
                                "upload the photo again with POST /v1/avatars")
        await asyncio.gather(*(w.refresh() for w in running))
        open_ = [w for w in running if w.room > 0]
        return sorted(open_, key=lambda w: (w.health.sessions + w.pending) / w.health.max_sessions)

    async def post_session(self, request: web.Request) -> web.Response:
        # As a worker would: token, then the offer, then capacity (a bad offer is not told to retry)
        require_token(request, self.config.token)
        body = (await read_offer(request, self.offer_limit, check_session_offer)).encode()
        for worker in await self._by_room(request.query.get("avatar")):
            worker.pending += 1
            try:
                response = await self._forward(worker, request, self._session_query(request, worker), body)
            except WorkerGone:
                continue
            finally:
                worker.pending -= 1
            if response.status == 201:
                worker.admitted()
            if response.status != 503:  # a 503 here lost a race for the last slot: try the next
                return _prefix_location(response, worker)
        self.counters.sessions_rejected.inc()
        total = sum(w.health.max_sessions for w in self.workers.running())
        raise self._retry(f"server is at capacity ({total} sessions)" if total else
                          self.workers.states().none_serving())

    def _session_query(self, request: web.Request, worker: WorkerProcess) -> str:
        """POST /v1/sessions with an uploaded avatar's id as this worker knows it."""
        query = dict(request.query)
        if "avatar" in query:
            query["avatar"] = self.avatars.local_id(query["avatar"], worker)
        return SESSIONS_PATH + (f"?{urlencode(query)}" if query else "")

    async def session_request(self, request: web.Request) -> web.Response:
        """Anything under /v1/sessions/{id}: to the worker that owns the session."""
        worker, inner_id = self._owner(request.match_info["id"])
        tail = request.match_info.get("tail", "")
        # match_info is decoded: quoted again, an id's '?', '#' or '/' stays part of it at the worker
        path = f"{SESSIONS_PATH}/{quote(inner_id, safe='')}" + (f"/{quote(tail)}" if tail else "")
        query = request.rel_url.query_string
        body = await self._body(request, self.offer_limit, "the request body")
        try:
            response = await self._forward(worker, request, path + (f"?{query}" if query else ""), body)
        except WorkerGone:
            raise self._gone(request.match_info["id"]) from None
        return _public_id(_prefix_location(response, worker), inner_id, request.match_info["id"])

    def _owner(self, session_id: str) -> tuple[WorkerProcess, str]:
        index, separator, inner_id = session_id.partition(ID_SEPARATOR)
        if not (separator and inner_id and WORKER_INDEX.fullmatch(index)
                and int(index) < len(self.workers.all)):
            raise self._gone(session_id)
        worker = self.workers.all[int(index)]
        if not worker.running:  # its sessions ended with it
            raise self._gone(session_id)
        return worker, inner_id

    def _gone(self, session_id: str) -> ApiError:
        return ApiError(404, f"no session {session_id}: it ended or never existed")

    async def post_avatar(self, request: web.Request) -> web.Response:
        """Every worker analyses the photo; the front answers one id that names it in all."""
        require_token(request, self.config.token)  # before reading a photo's worth of body
        body = await self._body(request, self.body_limit, "the photo")
        running = self.workers.running()
        if not running:
            raise self._retry("no worker is running")
        try:
            responses = await asyncio.gather(*(self._forward(w, request, AVATARS_PATH, body)
                                               for w in running))
        except WorkerGone:
            raise self._retry("a worker restarted during the upload") from None
        refused = [r for r in responses if r.status != 201]
        if refused:
            return refused[0]  # the worker's reason (401, 413, 422...) as it wrote it
        ids = [_json_id(r) for r in responses]
        self.avatars.remember(ids[0], list(zip(running, ids, strict=True)))
        return responses[0]

    async def healthz(self, _: web.Request) -> web.Response:
        await asyncio.gather(*(w.refresh() for w in self.workers.running()))
        # read after the refreshes: shutdown may have begun while they waited on a hung worker
        healths = [w.health for w in self.workers.running()]
        return health_response(self.workers.states(), healths, self.config.retry_after_s)

    async def metrics(self, _: web.Request) -> web.Response:
        await asyncio.gather(*(w.read_metrics() for w in self.workers.all))
        body = sum_exposition([*self.workers.expositions(), self.counters.render()])
        return web.Response(body=body.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def avatar_preview(self, request: web.Request) -> web.Response:
        """The analysed face of an avatar, from a worker that holds it (under its own id there)."""
        avatar_id = request.match_info["id"]
        for worker in self.avatars.holders(avatar_id, self.workers.running()):
            path = f"{AVATARS_PATH}/{quote(self.avatars.local_id(avatar_id, worker), safe='')}/preview"
            try:
                return await self._forward(worker, request, path, None)
            except WorkerGone:
                continue
        raise ApiError(404, f"no avatar {avatar_id}: upload the photo with POST {AVATARS_PATH} first")

    async def anything_else(self, request: web.Request) -> web.Response:
        """The pages, /static and unknown routes: any worker serves them the same."""
        body = await self._body(request, self.offer_limit, "the request body")
        for worker in sorted(self.workers.running(), key=lambda w: w.health.sessions):
            try:
                return await self._forward(worker, request, str(request.rel_url), body)
            except WorkerGone:
                continue
        raise self._retry("no worker is running")


def _prefix_location(response: web.Response, worker: WorkerProcess) -> web.Response:
    """Location /v1/sessions/{id}... -> /v1/sessions/{worker}.{id}...: later requests find it."""
    location = response.headers.get("Location", "")
    if location.startswith(SESSIONS_PATH + "/"):
        inner = location[len(SESSIONS_PATH) + 1:]
        response.headers["Location"] = f"{SESSIONS_PATH}/{worker.index}{ID_SEPARATOR}{inner}"
    return response


def _public_id(response: web.Response, inner_id: str, public_id: str) -> web.Response:
    """The worker's JSON names the session by the worker's id: name it by the one the client used."""
    if response.content_type != "application/json" or not response.body:  # e.g. HEAD: headers only
        return response
    assert isinstance(response.body, bytes)
    answer = json.loads(response.body)
    if answer.get("id") == inner_id:
        answer["id"] = public_id
    if isinstance(answer.get("error"), str):  # "no session X: ...", "...: GET /v1/sessions/X"
        for worker_words, client_words in ((f"session {inner_id}", f"session {public_id}"),
                                           (f"{SESSIONS_PATH}/{inner_id}", f"{SESSIONS_PATH}/{public_id}")):
            answer["error"] = answer["error"].replace(worker_words, client_words)
    response.body = json.dumps(answer).encode()
    return response


def _json_id(response: web.Response) -> str:
    assert isinstance(response.body, bytes)
    return str(json.loads(response.body)["id"])


FRONT = web.AppKey("front", Front)


@web.middleware
async def _same_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Host and Origin checks on the client's own connection (workers trust the front's)."""
    config = request.app[FRONT].config
    check_same_site(request, config.token, config.host, config.port)
    return await handler(request)


def create_front(config: ServeConfig, count: int) -> web.Application:
    """The public app: `count` worker servers behind one address. Workers start with the app."""
    json_parse_errors()  # aiohttp's own 400s as JSON (parse_errors.py)
    front = Front(config, count)
    app = web.Application(client_max_size=front.body_limit, middlewares=[json_errors, _same_site])
    app[FRONT] = front
    app[CONFIG] = config
    app.router.add_post(SESSIONS_PATH, front.post_session)
    app.router.add_route("*", SESSIONS_PATH + "/{id}", front.session_request)
    app.router.add_route("*", SESSIONS_PATH + "/{id}/{tail:.*}", front.session_request)
    app.router.add_post(AVATARS_PATH, front.post_avatar)
    app.router.add_get(AVATARS_PATH + "/{id}/preview", front.avatar_preview)
    app.router.add_get("/healthz", front.healthz)
    app.router.add_get("/metrics", front.metrics)
    app.router.add_route("*", "/{tail:.*}", front.anything_else)
    app.on_startup.append(_start_workers)
    app.on_shutdown.append(_stop_workers)
    return app


async def _start_workers(app: web.Application) -> None:
    await app[FRONT].workers.start()


async def _stop_workers(app: web.Application) -> None:
    await app[FRONT].workers.stop()
