"""A server process's threads: only the ones it plans for, so sessions do not fight over cores.

Each extra pool (onnxruntime's intra-op threads per session, OpenCV's helper threads, OpenBLAS's
spinning workers) contends with the render pool and the event loop for the same two cores, and
shows up as skipped frames on a machine with cores to spare (issue 9).
"""

import gc

import cv2
import pytest
from aiohttp import web
from threadpoolctl import threadpool_info

from lipstream.cli import build_parser
from lipstream.engine.avatar import Avatar
from lipstream.engine.config import EngineConfig
from lipstream.engine.runners import OnnxMotionModel
from lipstream.kernels import get_kernels
from lipstream.streaming import server
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.server import default_engine_factory, serving_app
from lipstream.streaming.worker import RenderPool


def test_every_session_shares_one_single_threaded_motion_model() -> None:
    build = default_engine_factory(EngineConfig())
    avatar = Avatar.default()
    first, second = build(avatar), build(avatar)
    assert first.model is second.model  # type: ignore[attr-defined]
    model = first.model  # type: ignore[attr-defined]
    if isinstance(model, OnnxMotionModel):  # the shipped model; the baseline has no runtime
        options = model.runner.session.get_session_options()  # type: ignore[attr-defined]
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_opencv_and_blas_run_on_the_calling_thread_only() -> None:
    pool = RenderPool(1)
    get_kernels("cpu")  # what every CPU renderer builds
    try:
        pool_threads = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert all(n == 1 for n in pool_threads)
        assert cv2.getNumThreads() == 1
    finally:
        pool.shutdown()


async def _started_freeze_count(app: "web.Application") -> int:
    """How many objects the collector has frozen once `app` has run its start-up hooks."""
    runner = web.AppRunner(app)
    gc.unfreeze()
    await runner.setup()  # runs the start-up hooks: avatar, warm engine, then the freeze
    try:
        return gc.get_freeze_count()
    finally:
        gc.unfreeze()
        await runner.cleanup()


async def test_a_started_worker_keeps_its_start_up_objects_out_of_every_collection() -> None:
    """A full collection of everything a worker loads takes 140-240 ms with the GIL held: every
    session of the process would stall. After start-up, those objects are frozen."""
    app = serving_app(ServeConfig(max_sessions=1))  # what worker_main serves
    assert await _started_freeze_count(app) > 10_000  # modules, the avatar, the model: all of them


async def test_a_single_process_server_freezes_its_start_up_objects_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`lipstream serve --workers 1` (and any server on one core) is as long-running as a worker."""
    served: list[web.Application] = []
    monkeypatch.setattr(server.web, "run_app", lambda app, **_: served.append(app))
    args = build_parser("serve").parse_args(["serve", "--workers", "1", "--port", "0"])
    assert server.run_serve(args) == 0
    assert await _started_freeze_count(served[0]) > 10_000
