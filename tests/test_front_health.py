"""What the front of `lipstream serve --workers 2` says of its workers when one is not serving:
hung (SIGSTOP: alive, not answering), crashed and restarting (SIGKILL), or stopped with the front
(SIGTERM). Real processes, real aiortc peers on loopback."""

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.test_workers import AUTH, TOKEN, Served, alive, health, published, series, serve, text

pytestmark = pytest.mark.usefixtures("loopback")

CHECKER = aiohttp.ClientTimeout(total=10.0)  # a health checker's patience: over the 2 s status read
NOTICE_S = 10.0  # how long the front may take to see a worker exit


@pytest.fixture(scope="module")
def front() -> Iterator[Served]:
    with serve("--workers", "2", "--max-sessions", "2", "--token", TOKEN) as served:
        yield served


async def healthz(http: aiohttp.ClientSession, served: Served) -> tuple[int, dict[str, object]]:
    async with http.get(f"{served.url}/healthz") as response:
        return response.status, dict(await response.json())


def states(serving: int = 0, hung: int = 0, restarting: int = 0, stopping: int = 0) -> dict[str, int]:
    return {"serving": serving, "hung": hung, "restarting": restarting, "stopping": stopping}


async def test_a_hung_worker_is_counted_apart_and_the_front_says_degraded(front: Served) -> None:
    """Once a hung worker counted in `workers`: a load balancer saw full capacity."""
    async with aiohttp.ClientSession(timeout=CHECKER) as http:
        assert (await health(http, front))["worker_states"] == states(serving=2)
        pids = front.workers()
        os.kill(pids[0], signal.SIGSTOP)
        try:
            status, body = await healthz(http, front)
            assert status == 200, body  # the other worker serves: keep sending sessions here
            assert body["status"] == "degraded" and body["workers"] == 1
            assert body["worker_states"] == states(serving=1, hung=1) and body["max_sessions"] == 1
            os.kill(pids[1], signal.SIGSTOP)
            async with http.get(f"{front.url}/healthz") as response:
                body = dict(await response.json())
                assert response.status == 503 and response.headers["Retry-After"].isdigit(), body
            assert body["status"] == "unavailable" and body["worker_states"] == states(hung=2)
            assert body["error"].startswith("no worker is serving (2 hung)"), body
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert (await health(http, front))["status"] == "ok"


async def test_a_restarting_worker_makes_the_front_degraded(front: Served) -> None:
    async with aiohttp.ClientSession(timeout=CHECKER) as http:
        await health(http, front)
        os.kill(front.workers()[1], signal.SIGKILL)
        await exited(http, front)
        status, body = await healthz(http, front)
        assert status == 200 and body["status"] == "degraded" and body["workers"] == 1, body
        assert (await health(http, front))["status"] == "ok"  # restarted


ENDED = re.compile(r"^lipstream_sessions_ended_total\{[^}]*\} (\S+)$", re.M)  # every reason


def ended(metrics: str) -> float:
    return sum(float(v) for v in ENDED.findall(metrics))


def consistent(metrics: str) -> bool:
    """Sessions started minus sessions ended is the sessions running now."""
    started = series(metrics, "lipstream_sessions_started_total")
    return started - ended(metrics) == series(metrics, "lipstream_sessions")


async def test_sessions_started_less_ended_is_the_gauge_while_a_worker_hangs_and_after_it_dies(
        front: Served) -> None:
    """Once a hung worker's sessions left the gauge but not the counters, and a crashed worker's
    were counted ended from its health read, not from the counters the front had shown."""
    async with aiohttp.ClientSession(timeout=CHECKER) as http:
        await health(http, front)
        async with published(front, http) as doomed:
            assert doomed.location is not None
            pid = front.workers()[int(doomed.location.split("/")[-1].split(".")[0])]
            await asyncio.sleep(1.5)  # the front reads each worker's metrics every second
            assert consistent(shown := await text(http, f"{front.url}/metrics")), shown
            assert series(shown, "lipstream_sessions") == 1
            os.kill(pid, signal.SIGSTOP)
            try:
                hung = await text(http, f"{front.url}/metrics")
            finally:
                os.kill(pid, signal.SIGKILL)
            assert consistent(hung), hung
            await exited(http, front)
            shown = await text(http, f"{front.url}/metrics")
            assert consistent(shown) and series(shown, "lipstream_sessions") == 0, shown
            assert series(shown, 'lipstream_sessions_ended_total{reason="worker_exited"}') == 1
        await health(http, front)


async def test_a_session_that_ended_just_before_its_worker_crashed_is_counted_ended_once(
        front: Served) -> None:
    """Ended by DELETE, then the worker killed before the front's next health read: once it was
    counted ended twice (its own count, then 'worker_exited' from the stale health read), and
    started less ended stayed below the gauge for good."""
    async with aiohttp.ClientSession(timeout=CHECKER) as http:
        await health(http, front)
        async with published(front, http) as doomed:
            assert doomed.location is not None
            pid = front.workers()[int(doomed.location.split("/")[-1].split(".")[0])]
            await asyncio.sleep(1.5)  # the front's poll has read the session
            async with http.delete(f"{front.url}{doomed.location}", headers=AUTH) as response:
                assert response.status == 204
            assert consistent(shown := await text(http, f"{front.url}/metrics")), shown
            os.kill(pid, signal.SIGKILL)
            await exited(http, front)
            shown = await text(http, f"{front.url}/metrics")
            assert consistent(shown) and series(shown, "lipstream_sessions") == 0, shown
        await health(http, front)


async def exited(http: aiohttp.ClientSession, served: Served) -> None:
    """Once the front has seen a worker exit (it restarts it)."""
    deadline = time.monotonic() + NOTICE_S
    while (await healthz(http, served))[1].get("worker_states") != states(serving=1, restarting=1):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_front_shutting_down_says_stopping_and_restarts_no_worker() -> None:
    """SIGTERM to the front while a /healthz waits on a hung worker and while the other worker
    restarts: the answer says the server is stopping (once: 'they are restarting'), nothing is
    restarted, and every worker is gone within 5 s."""
    with serve("--workers", "2", "--max-sessions", "2", "--token", TOKEN) as served:
        async with aiohttp.ClientSession(timeout=CHECKER, headers=AUTH) as http:
            await health(http, served)
            hung, crashed = served.workers()
            os.kill(crashed, signal.SIGKILL)  # its restart is under way (imports, the avatar)
            os.kill(hung, signal.SIGSTOP)
            try:
                asking = asyncio.ensure_future(healthz(http, served))  # waits 2 s on the hung one
                await asyncio.sleep(1.0)
                workers = served.workers()
                served.process.send_signal(signal.SIGTERM)
                status, body = await asking
            finally:
                with contextlib.suppress(ProcessLookupError):  # (it holds the front's stderr open)
                    os.kill(hung, signal.SIGCONT)
        start = time.monotonic()
        while any(alive(pid) for pid in workers) and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        assert not any(alive(pid) for pid in workers) and time.monotonic() - start < 5
        served.process.wait(10)
        logged = served.process.stderr.read().decode()  # type: ignore[union-attr]
    assert status == 503 and body["status"] == "stopping", body
    assert body["error"] == "the server is shutting down" and body["worker_states"] == states(stopping=2)
    assert "restarted" not in logged and "did not restart" not in logged, logged[-3000:]
