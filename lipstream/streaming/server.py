"""`lipstream serve`: the aiohttp application, its WHIP/WHEP-shaped routes, and the command.

Every 4xx answer is JSON `{"error": "..."}` saying what to change. Sessions live in
`ServerState.sessions`; admission is checked before any work is done for a new one.
"""

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from lipstream.engine.batching import MAX_BATCH_WINDOW_MS, BatchingMotionModel, default_batch_window_ms
from lipstream.engine.config import EngineConfig
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.device import add_device_argument, choose_device, resolve_device
from lipstream.engine.inputfile import check_input_file
from lipstream.errors import LipstreamError, PhotoError
from lipstream.streaming import api, guards, routes
from lipstream.streaming.auth import ViewerTokens, is_loopback, resolve_token
from lipstream.streaming.avatars import Avatar, AvatarStore
from lipstream.streaming.capacity import estimate_capacity, workers_problem
from lipstream.streaming.clock import Clock, MonotonicClock
from lipstream.streaming.codecs import tune_encoders
from lipstream.streaming.config import EngineFactory, ServeConfig
from lipstream.streaming.encoders import add_video_codec_argument, resolve_video_codec
from lipstream.streaming.eventloop import use_fast_event_loop
from lipstream.streaming.listen import check_listen
from lipstream.streaming.memory import limit_arenas, trim_periodically
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.parse_errors import json_parse_errors
from lipstream.streaming.session import SessionConfig
from lipstream.streaming.state import ServerState
from lipstream.streaming.worker import FrameEngine, RenderPool

if TYPE_CHECKING:
    from lipstream.engine.motion import MotionModel

log = logging.getLogger(__name__)
# After answering a request whose body was not all read (408, 413, 401...), read and discard the
# rest for this long so the client sees the answer rather than a reset, then close. aiohttp's 10 s
# default let a dribbling client hold the connection that long after its 408.
REFUSED_BODY_LINGER_S = 1.0

class SharedModelEngines:
    """Engines built with the server's engine config, all sharing one motion model (one runner:
    on a GPU, one TensorRT engine per server), loaded by the first session's thread. With a
    gather window (`batch_window_ms`; None: the device's default) the sessions' calls to it are
    batched by a thread of its own, each batch's size told to `on_batch`; `close` stops it."""

    def __init__(self, config: EngineConfig, batch_window_ms: float | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._config, self._batch_window_ms, self._on_batch = config, batch_window_ms, on_batch
        self._lock = threading.Lock()
        self._shared: list[MotionModel] = []

    def __call__(self, avatar: Avatar) -> FrameEngine:
        from lipstream.engine.engine import Engine

        with self._lock:
            if not self._shared:
                self._shared.append(_shared_model(self._config, self._batch_window_ms, self._on_batch))
        engine: FrameEngine = Engine(avatar, self._config, self._shared[0])
        return engine

    def close(self) -> None:
        """Stop the batcher's thread, if there is one (idempotent): called once no session renders."""
        with self._lock:
            model = self._shared[0] if self._shared else None
        if isinstance(model, BatchingMotionModel):
            model.close()


def default_engine_factory(config: EngineConfig, batch_window_ms: float | None = None,
                           on_batch: Callable[[int], None] | None = None) -> SharedModelEngines:
    """The server's engines: `SharedModelEngines`."""
    return SharedModelEngines(config, batch_window_ms, on_batch)


def _shared_model(config: EngineConfig, batch_window_ms: float | None,
                  on_batch: Callable[[int], None] | None) -> "MotionModel":
    from lipstream.engine.motion import load_motion_model

    choice = resolve_device(config.device)
    model = load_motion_model(config.motion, config.lookahead_ms, choice.runner)
    window_ms = default_batch_window_ms(choice.device) if batch_window_ms is None else batch_window_ms
    if window_ms <= 0:
        return model
    log.info("motion model calls batched across sessions: %g ms gather window", window_ms)
    return BatchingMotionModel(model, window_ms, on_batch=on_batch)


def with_video_codec(config: ServeConfig) -> ServeConfig:
    """Resolve `config.video_codec` (one log line), tune the senders' encoders (codecs.py) and
    hand the sessions the codec to prefer."""
    device = resolve_device(config.engine.device).device
    choice = resolve_video_codec(config.video_codec, config.engine.device, device)
    tune_encoders(choice.h264_encoder)
    return replace(config, session=replace(config.session, video_codec=choice.codec))


def default_avatar_loader(face: str | None) -> Callable[[], Avatar]:
    def load() -> Avatar:
        from lipstream.engine.avatar import Avatar as AvatarClass

        return AvatarClass.default() if face is None else AvatarClass.from_image(face)

    return load


def include_loopback_candidates() -> None:
    """Make aioice gather 127.0.0.1 (it skips it): a loopback-bound server talks to local browsers.

    aioice has no setting for this, so its address lister is wrapped, once per process.
    """
    from aioice import ice

    original = getattr(ice.get_host_addresses, "__wrapped__", ice.get_host_addresses)

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        found = [a for a in original(use_ipv4, use_ipv6) if a != "127.0.0.1"]
        return ["127.0.0.1", *found] if use_ipv4 else found

    addresses.__wrapped__ = original  # type: ignore[attr-defined]
    ice.get_host_addresses = addresses


def create_app(config: ServeConfig | None = None, engine_factory: EngineFactory | None = None,
               clock: Clock | None = None,
               load_avatar: Callable[[], Avatar] | None = None) -> web.Application:
    """The server. The optional seams are for tests: an engine factory, a clock, a default avatar."""
    config = with_video_codec(config or ServeConfig())
    json_parse_errors()  # aiohttp's own 400s as JSON (parse_errors.py)
    load_avatar = load_avatar or default_avatar_loader(config.face)
    token, generated = resolve_token(config.host, config.token)
    pool = RenderPool(config.workers)
    metrics = ServerMetrics()
    # loads nothing until an engine is built, so it costs nothing when a test's factory replaces it
    shared = default_engine_factory(config.engine, config.batch_window_ms, metrics.model_batch_size.observe)
    factory = engine_factory or shared
    state = ServerState(
        config=config, token=token, token_generated=generated, pool=pool, metrics=metrics,
        avatars=AvatarStore(load_avatar, pool, config.uploads),
        engine_factory=factory, clock=clock or MonotonicClock(),
        max_sessions=config.max_sessions or 0,
    )
    loopback_ice = is_loopback(config.host) if config.loopback_ice is None else config.loopback_ice
    if loopback_ice:
        include_loopback_candidates()
    app = web.Application(client_max_size=config.uploads.max_bytes + 64 * 1024,
                          handler_args={"lingering_time": REFUSED_BODY_LINGER_S},
                          middlewares=[api.json_errors, guards.same_site, guards.viewer_token])
    app[api.STATE] = state
    app[api.CONFIG] = config
    app[api.VIEWER_TOKENS] = ViewerTokens()
    routes.add_routes(app, static_dir())
    app.on_startup.append(_prepare)
    app.cleanup_ctx.append(_memory_kept_flat)
    app.on_shutdown.append(_close_sessions)
    app.on_cleanup.append(_stop_pool)
    app.on_cleanup.append(functools.partial(_close_model, shared))  # after the pool: none waits on it
    return app


def serving_app(config: ServeConfig) -> web.Application:
    """`create_app` for a process that serves until it is stopped (`lipstream serve` on its own, or
    one of its workers): once started, everything alive moves to the collector's permanent generation.

    Such a process holds ~150k objects after start-up (modules, the avatar, the model); a full
    collection walks them all with the GIL held, 140-240 ms measured here, stalling every session of
    the process for several frames. They live as long as the process, so later collections skip them.
    """
    app = create_app(config)

    async def freeze(_: web.Application) -> None:
        gc.collect()
        gc.freeze()

    app.on_startup.append(freeze)  # after create_app's own start-up work: the avatar and model
    return app


def static_dir() -> Path:
    return Path(str(resources.files("lipstream.streaming") / "static"))


async def _prepare(app: web.Application) -> None:
    """Analyse the default avatar now (the first session must not wait ~1 s for it), and measure
    capacity unless --max-sessions was given."""
    state = app[api.STATE]
    avatar = await state.avatars.default()
    engine, _ = await state.pool.run(lambda: warm_engine(state.engine_factory(avatar)))
    if state.max_sessions:
        return

    def measure() -> str:
        capacity = estimate_capacity(engine, state.config.capacity_cores,
                                     state.config.session.video_codec)
        state.max_sessions = capacity.max_sessions
        return capacity.describe()

    description, _ = await state.pool.run(measure)
    log.info("%s (set --max-sessions to override)", description)


def warm_engine(engine: FrameEngine) -> FrameEngine:
    """One frame made and rendered, so the shared model is loaded and first-use costs are paid
    before the first session (its first frame then comes a render, not ~100 ms, after connecting)."""
    engine.push_audio(np.zeros(engine.latency_samples, np.float32), SAMPLE_RATE)
    engine.pop_frame()
    return engine


async def _close_sessions(app: web.Application) -> None:
    state = app[api.STATE]
    await asyncio.gather(*(s.close("server_shutdown") for s in list(state.sessions.values())),
                         return_exceptions=True)


async def _memory_kept_flat(app: web.Application) -> AsyncIterator[None]:
    """Trim the heap every so often while the server runs (memory.py says why)."""
    task = asyncio.create_task(trim_periodically(), name="trim-heap")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_pool(app: web.Application) -> None:
    state = app[api.STATE]
    await asyncio.get_running_loop().run_in_executor(None, state.pool.shutdown)
    await asyncio.get_running_loop().run_in_executor(None, state.avatars.close)


async def _close_model(shared: SharedModelEngines, app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, shared.close)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServeConfig()
    parser.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    parser.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    parser.add_argument("--face", default=d.face, help="photo of the face to animate "
                        "(default: the bundled avatar)")
    parser.add_argument("--max-sessions", type=int, default=d.max_sessions,
                        help="concurrent sessions before answering 503 (default: measured at start-up as "
                        "cores x 40 ms / (engine + VP8 encode ms per frame) x 0.5)")
    parser.add_argument("--max-session-s", type=float, default=SessionConfig().max_duration_s,
                        help="end each session after this many seconds, reason max_duration "
                        "(default: no limit)")
    parser.add_argument("--token", default=d.token, help="require 'Authorization: Bearer TOKEN' on "
                        "session, viewer and avatar endpoints (generated when binding a non-loopback "
                        "address); viewer links get a token that only watches their session")
    parser.add_argument("--workers", type=int, default=d.worker_processes,
                        help="server processes, each running its share of the sessions (default: one "
                        "per core; 1 serves everything in this process)")
    parser.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                        help="gather the sessions' motion model calls for up to this long and run them "
                        "as one batch (default: a few ms on a GPU, off on the CPU; 0: off)")
    add_device_argument(parser)
    add_video_codec_argument(parser)


def run_serve(args: argparse.Namespace) -> int:
    limit_arenas()  # before any thread allocates (memory.py)
    config = _serve_config(args)
    check_listen(config.host, config.port)  # before the seconds of start-up
    quiet_ice_logs(getattr(args, "verbose", False))
    processes = config.worker_processes or os.cpu_count() or 1
    if config.max_sessions is not None:
        processes = min(processes, config.max_sessions)  # every worker takes at least one session
    if processes > 1:
        from lipstream.streaming.front import create_front

        token, generated = resolve_token(config.host, config.token)
        app = create_front(replace(config, token=token), processes)
    else:
        app = serving_app(config)
        token, generated = app[api.STATE].token, app[api.STATE].token_generated
    shown = "localhost" if is_loopback(config.host) else config.host
    print(f"lipstream serve: http://{shown}:{config.port}/", flush=True)
    if generated:
        print(f"lipstream serve: token (send 'Authorization: Bearer <token>'): {token}", flush=True)
    use_fast_event_loop()  # the front too: it relays every request to the workers
    web.run_app(app, host=config.host, port=config.port, print=_quiet, access_log=None,
                shutdown_timeout=config.shutdown_timeout_s)
    return 0


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    if args.face is not None:
        check_input_file(args.face, "photo", PhotoError)
    for flag, value in (("--max-sessions", args.max_sessions), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise LipstreamError(f"{flag} must be at least 1")
    if args.workers is not None and (problem := workers_problem(args.workers)) is not None:
        raise LipstreamError(problem)
    if args.max_session_s is not None and not args.max_session_s > 0:  # NaN too
        raise LipstreamError("--max-session-s must be more than 0")
    if args.batch_window_ms is not None and not 0 <= args.batch_window_ms <= MAX_BATCH_WINDOW_MS:
        raise LipstreamError(f"--batch-window-ms must be 0 (off) to {MAX_BATCH_WINDOW_MS:g}")
    choose_device(args.device)  # fail now, with one line, on --device cuda without a GPU
    defaults = ServeConfig()
    return replace(defaults, host=args.host, port=args.port, face=args.face,
                   max_sessions=args.max_sessions, token=args.token, worker_processes=args.workers,
                   session=replace(defaults.session, max_duration_s=args.max_session_s),
                   engine=replace(defaults.engine, device=args.device), video_codec=args.video_codec,
                   batch_window_ms=args.batch_window_ms)


def quiet_ice_logs(verbose: bool = False) -> None:
    """aioice logs every ICE check at INFO: keep it and aiortc to warnings unless asked."""
    if not verbose:
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _quiet(*_: Any) -> None:
    """aiohttp's own start-up banner would repeat the URL printed above."""
