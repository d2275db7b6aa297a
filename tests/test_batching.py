"""BatchingMotionModel: sessions' concurrent `predict` calls run as one `predict_batch`, each caller
getting exactly what the model alone gives; errors reach every caller; close fails the waiting.
And the server batching its sessions' calls with `--batch-window-ms`.

The real shipped model on onnxruntime's CPU runner, real engines, real aiortc peers on loopback.
"""

import asyncio
import threading
from collections.abc import Callable, Iterator

import aiohttp
import numpy as np
import pytest

from lipstream.bench import speechlike
from lipstream.cli import build_parser
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.batching import (
    DEFAULT_GPU_BATCH_WINDOW_MS,
    BatchingMotionModel,
    default_batch_window_ms,
)
from lipstream.engine.constants import N_MELS
from lipstream.engine.engine import Frame
from lipstream.engine.motion import MotionModel, load_motion_model, shipped_model_path
from lipstream.errors import LipstreamError, ModelError
from lipstream.streaming.server import ServeConfig, _serve_config
from tests.serving import loopback_only, publish, running_server, still_streaming
from tests.test_batch import _alone

THREADS = 8
CALLS_PER_THREAD = 20
WINDOW_MS = 20.0  # long enough that 8 threads started together meet in one batch on a busy machine
SIZE_PX = 192  # small frames: the test is about equality, not looks

pytestmark = pytest.mark.skipif(shipped_model_path() is None, reason="needs the shipped model")


@pytest.fixture(scope="module")
def model() -> MotionModel:
    return load_motion_model()


@pytest.fixture
def batching(model: MotionModel) -> Iterator[tuple[BatchingMotionModel, list[int]]]:
    sizes: list[int] = []
    batcher = BatchingMotionModel(model, WINDOW_MS, on_batch=sizes.append)
    yield batcher, sizes
    batcher.close()


def _windows(model: MotionModel, seed: int) -> np.ndarray:
    frames = model.context_frames + model.lookahead_frames
    rng = np.random.default_rng(seed)
    return rng.uniform(-6.0, -1.0, (CALLS_PER_THREAD, frames, N_MELS)).astype(np.float32)


def _in_threads(work: Callable[[int], object], count: int = THREADS) -> list[object]:
    """`work(i)` in `count` threads started together; their results, or the exception each raised."""
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a caller never got its answer"
    return results


def test_concurrent_calls_are_batched_and_each_gets_its_own_row(
        model: MotionModel, batching: tuple[BatchingMotionModel, list[int]]) -> None:
    batcher, sizes = batching
    inputs = [_windows(model, seed) for seed in range(THREADS)]
    got = _in_threads(lambda i: [batcher.predict(w) for w in inputs[i]])
    for i, outputs in enumerate(got):
        assert isinstance(outputs, list), outputs
        for window, output in zip(inputs[i], outputs, strict=True):
            alone = model.predict(window)
            np.testing.assert_allclose(output.controls, alone.controls, rtol=0, atol=1e-6)
            assert output.visemes is not None and alone.visemes is not None
            np.testing.assert_allclose(output.visemes, alone.visemes, rtol=0, atol=1e-6)
    assert sum(sizes) == THREADS * CALLS_PER_THREAD
    assert max(sizes) > 1, sizes


def test_an_error_in_the_batch_reaches_every_caller(
        model: MotionModel, batching: tuple[BatchingMotionModel, list[int]]) -> None:
    batcher, _ = batching
    wrong = np.zeros((model.context_frames + model.lookahead_frames, N_MELS + 1), np.float32)
    got = _in_threads(lambda _i: batcher.predict(wrong))  # onnxruntime refuses the shape
    assert all(isinstance(result, Exception) for result in got), got
    good = _windows(model, 0)[0]  # and the batcher still serves the next calls
    np.testing.assert_array_equal(batcher.predict(good).controls, model.predict(good).controls)


def test_close_fails_waiting_and_later_calls(model: MotionModel) -> None:
    batcher = BatchingMotionModel(model, window_ms=10_000)  # nothing runs before close
    window = _windows(model, 0)[0]
    waiting = threading.Thread(target=lambda: _expect_closed(batcher, window))
    waiting.start()
    while not batcher._queue:  # noqa: SLF001 - the call is queued: close must now fail it
        threading.Event().wait(0.001)
    batcher.close()
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    _expect_closed(batcher, window)


def _expect_closed(batcher: BatchingMotionModel, window: np.ndarray) -> None:
    with pytest.raises(ModelError, match="closed"):
        batcher.predict(window)


def _frames(avatar: Avatar, model: MotionModel, seed: int) -> list[Frame]:
    return _alone(avatar, model, speechlike(1.0 + 0.2 * seed, seed=seed), seed)


def test_engines_make_the_same_frames_batched(
        model: MotionModel, batching: tuple[BatchingMotionModel, list[int]]) -> None:
    batcher, sizes = batching
    avatar = Avatar.default(AvatarConfig(size=SIZE_PX))
    sessions = 4
    batched = _in_threads(lambda seed: _frames(avatar, batcher, seed), sessions)
    for seed, frames in enumerate(batched):
        alone = _frames(avatar, model, seed)
        assert isinstance(frames, list) and len(frames) == len(alone)
        for a, b in zip(frames, alone, strict=True):
            np.testing.assert_array_equal(a.image, b.image)
    assert max(sizes) > 1, sizes


async def test_server_batches_sessions_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_only(monkeypatch)
    avatar = Avatar.default(AvatarConfig(size=SIZE_PX))
    # Three render threads: a batch holds at most one call per thread, whatever the core count.
    config = ServeConfig(batch_window_ms=WINDOW_MS, max_sessions=4, workers=3)
    async with running_server(config, load_avatar=lambda: avatar) as server, \
            aiohttp.ClientSession() as http:
        speech = speechlike(8.0, seed=1)
        publishers = [await publish(server, http, speech) for _ in range(3)]
        for publisher in publishers:
            assert await still_streaming(publisher, within_s=10.0)
        async with http.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
        await asyncio.gather(*(publisher.stop(http) for publisher in publishers))
    assert _batched_calls(metrics, "+Inf") > _batched_calls(metrics, "1.0"), metrics


async def test_the_server_stops_its_batcher_thread_on_shutdown() -> None:
    avatar = Avatar.default(AvatarConfig(size=SIZE_PX))
    before = set(_batcher_threads())
    config = ServeConfig(batch_window_ms=WINDOW_MS, max_sessions=1, workers=1)
    async with running_server(config, load_avatar=lambda: avatar):
        started = set(_batcher_threads()) - before  # the start-up's warm engine loads the model
        assert len(started) == 1, started
    (thread,) = started
    assert not thread.is_alive(), "the motion batcher's thread outlived the server"


def _batcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "motion-batcher"]


def _batched_calls(metrics: str, bucket: str) -> float:
    """Model calls of at most `bucket` frames, from the lipstream_model_batch_size histogram."""
    line = f'lipstream_model_batch_size_bucket{{le="{bucket}"}} '
    return next(float(row[len(line):]) for row in metrics.splitlines() if row.startswith(line))


def test_batching_is_on_by_default_on_the_gpu_only() -> None:
    assert default_batch_window_ms("cuda") == DEFAULT_GPU_BATCH_WINDOW_MS > 0
    assert default_batch_window_ms("cpu") == 0


def test_the_serve_command_takes_batch_window_ms_with_the_config_default() -> None:
    parser = build_parser("serve")
    args = parser.parse_args(["serve", "--batch-window-ms", "3", "--device", "cpu"])
    assert _serve_config(args).batch_window_ms == 3
    assert parser.parse_args(["serve"]).batch_window_ms == ServeConfig().batch_window_ms
    for bad in ("-1", "41"):
        args = parser.parse_args(["serve", "--batch-window-ms", bad, "--device", "cpu"])
        with pytest.raises(LipstreamError, match="--batch-window-ms must be 0"):
            _serve_config(args)
