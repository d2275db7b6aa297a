"""`lipstream serve --workers 2`: the real command, real worker processes, real aiortc peers on
loopback. Sessions spread over both workers and stream; requests for a session reach its worker;
the front refuses, sums and survives a worker's crash; no worker outlives the front."""

import asyncio
import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from lipstream.streaming.client import Publisher
from lipstream.streaming.front_metrics import counters_only, sum_exposition
from lipstream.streaming.session import new_peer_connection
from tests.serving import client_offer, still_streaming

SILENCE = np.zeros(16_000, np.float32)
TOKEN = "front-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SDP = {"Content-Type": "application/sdp"} | AUTH
START_TIMEOUT_S = 90.0  # two workers import, analyse the avatar and bind, on a shared machine


pytestmark = pytest.mark.usefixtures("loopback")


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process, self.url = process, url

    def workers(self) -> list[int]:
        return children(self.process.pid)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(*args: str) -> Iterator[Served]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--port", str(port), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield Served(process, f"http://127.0.0.1:{port}")
    finally:
        workers = children(process.pid)
        if process.poll() is None:  # as a user stops it: the front stops its workers, removes their sockets
            process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def health(http: aiohttp.ClientSession, served: Served, workers: int = 2) -> dict[str, int]:
    """/healthz once `workers` workers answer (the front binds only after they started)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert served.process.poll() is None, served.process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{served.url}/healthz") as response:
                if response.status == 200 and (body := await response.json())["workers"] == workers:
                    return dict(body)
        await asyncio.sleep(0.2)
    raise AssertionError("the front did not report its workers in time")


@contextlib.asynccontextmanager
async def published(served: Served, http: aiohttp.ClientSession,
                    avatar: str | None = None) -> AsyncIterator[Publisher]:
    publisher = Publisher(served.url, SILENCE, token=TOKEN, avatar=avatar)
    try:
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 15)
        yield publisher
    finally:
        try:
            await publisher.stop(http)  # DELETE: the slot is free when the next request comes
        except aiohttp.ClientError:  # the front is gone (the tests that stop it)
            await publisher.stop()


@contextlib.asynccontextmanager
async def watching(http: aiohttp.ClientSession, url: str,
                   session: str) -> AsyncIterator[tuple[str, list[int]]]:
    """A WHEP viewer of `session` through the front -> (its Location, pts of frames as they come)."""
    viewer = new_peer_connection()
    viewer.addTransceiver("video", direction="recvonly")
    frames: list[int] = []
    tasks: list[asyncio.Task[None]] = []

    async def drain(track: MediaStreamTrack) -> None:
        while True:
            frames.append((await track.recv()).pts or 0)

    viewer.on("track", lambda track: tasks.append(asyncio.create_task(drain(track))))
    try:
        await viewer.setLocalDescription(await viewer.createOffer())
        async with http.post(f"{url}{session}/viewers", data=viewer.localDescription.sdp,
                             headers=SDP) as response:
            assert response.status == 201, await response.text()
            location = response.headers["Location"]
            answer = await response.text()
        await viewer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        yield location, frames
    finally:
        for task in tasks:
            task.cancel()
        await viewer.close()


def owner(publisher: Publisher) -> str:
    """The worker index the front put in front of the session id."""
    assert publisher.location is not None
    return publisher.location.split("/")[-1].split(".")[0]


async def upload(http: aiohttp.ClientSession, served: Served) -> str:
    form = aiohttp.FormData()  # a browser's form: its boundary must reach the workers intact
    form.add_field("photo", photo(), filename="me.png", content_type="image/png")
    async with http.post(f"{served.url}/v1/avatars", data=form, headers=AUTH) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["id"])


def photo() -> bytes:
    from skimage.data import astronaut

    out = io.BytesIO()
    Image.fromarray(astronaut()).save(out, format="PNG")
    return out.getvalue()


def series(metrics: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def counted(metrics: str) -> dict[str, float]:
    """Every counter and histogram series of an exposition (it must parse), by name and labels."""
    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for family in text_string_to_metric_families(metrics) if family.type in ("counter", "histogram")
            for s in family.samples if not s.name.endswith("_created")}


async def text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        return await response.text()


@pytest.fixture(scope="module")
def two_workers() -> Iterator[Served]:
    with serve("--workers", "2", "--max-sessions", "2", "--token", TOKEN) as served:
        yield served


async def test_sessions_spread_over_both_workers_and_requests_reach_their_worker(
        two_workers: Served) -> None:
    served = two_workers
    async with aiohttp.ClientSession() as http:
        assert await health(http, served) == {
            "status": "ok", "sessions": 0, "max_sessions": 2, "viewers": 0, "workers": 2,
            "worker_states": {"serving": 2, "hung": 0, "restarting": 0, "stopping": 0}}
        avatar = await upload(http, served)
        async with published(served, http, avatar) as first, published(served, http, avatar) as second:
            assert {owner(first), owner(second)} == {"0", "1"}  # the least loaded worker takes each
            assert await still_streaming(first, 5) and await still_streaming(second, 5)
            async with http.post(f"{served.url}/v1/sessions", data=first.pc.localDescription.sdp,
                                 headers=SDP) as response:
                assert response.status == 503 and response.headers["Retry-After"].isdigit()
                assert "capacity" in (await response.json())["error"]
            assert (await health(http, served))["sessions"] == 2
            metrics = await text(http, f"{served.url}/metrics")
            assert series(metrics, "lipstream_sessions") == 2
            assert series(metrics, "lipstream_sessions_started_total") == 2
            assert series(metrics, "lipstream_sessions_rejected_total") >= 1
            async with http.delete(f"{served.url}{first.location}", headers=AUTH) as response:
                assert response.status == 204
            async with http.delete(f"{served.url}{first.location}", headers=AUTH) as response:
                assert response.status == 404 and "no session" in (await response.json())["error"]
            assert (await health(http, served))["sessions"] == 1
            assert await still_streaming(second, 5)  # the other worker's session was not touched
            async with watching(http, served.url, second.location or "") as (viewer, frames):
                assert viewer.startswith(f"{second.location}/viewers/")  # it routes back to the worker
                assert (await health(http, served))["viewers"] == 1
                await asyncio.sleep(2)
                assert len(frames) >= 10, f"the viewer got {len(frames)} frames in 2 s"
                async with http.delete(f"{served.url}{viewer}", headers=AUTH) as response:
                    assert response.status == 204
            async with published(served, http) as third:  # the freed slot is the one offered
                assert owner(third) != owner(second)
                assert await still_streaming(third, 5)


async def test_the_front_answers_json_for_ids_no_worker_owns(two_workers: Served) -> None:
    async with aiohttp.ClientSession() as http:
        await health(http, two_workers)
        # int() refuses "²" (which str.isdigit() takes) and 5000 digits: each was once a 500
        for session_id in ("nope", "7.abc", "0.", "x.y", "\u00b2.abc", "9" * 5000 + ".abc"):
            async with http.delete(f"{two_workers.url}/v1/sessions/{session_id}", headers=AUTH) as response:
                assert response.status == 404 and "no session" in (await response.json())["error"]
        async with http.post(f"{two_workers.url}/v1/sessions", data="hello", headers=SDP) as response:
            assert response.status == 400 and "malformed SDP" in (await response.json())["error"]
        gzip = SDP | {"Content-Encoding": "gzip"}  # and bytes that are not gzip: the front reads them
        async with http.post(f"{two_workers.url}/v1/sessions", data="hello", headers=gzip) as response:
            assert response.status == 400 and "Content-Encoding" in (await response.json())["error"]
        async with http.post(f"{two_workers.url}/v1/sessions", data="v=0") as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert "token" in (await response.json())["error"]  # the worker's answer, passed through
        async with http.get(f"{two_workers.url}/") as response:
            assert response.status == 200 and "<html" in await response.text()


async def first_line_of_answer(url: str, path: str, content_length: int) -> str:
    """POST only the head of a request without a token, announcing a body it never sends."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/png\r\n"
                 f"Content-Length: {content_length}\r\n\r\n".encode())
    try:
        return (await asyncio.wait_for(reader.readline(), 20)).decode().strip()
    finally:
        writer.close()


async def test_the_front_reads_no_photo_sized_body_for_a_client_without_the_token(
        two_workers: Served) -> None:
    """The front reads a body before a worker checks the token: it must not hold a photo's worth
    (20 MB) of memory for anyone who connects. Once it waited for each such body (then 408)."""
    served, photo_bytes = two_workers, 19 * 1024 * 1024
    async with aiohttp.ClientSession() as http:
        await health(http, served)
    for path, status in (("/v1/avatars", 401), ("/v1/sessions/0.abc/viewers", 413), ("/nothing", 413)):
        assert (await first_line_of_answer(served.url, path, photo_bytes)).split()[1] == str(status), path


async def test_the_front_checks_token_and_offer_before_saying_it_is_full(two_workers: Served) -> None:
    """As one server does: token, then offer, then capacity. Once a 503 told anyone the capacity,
    and told a broken offer to retry."""
    offer = await client_offer("sendrecv", "recvonly")
    async with aiohttp.ClientSession() as http:
        await health(http, two_workers)
        held = []  # sessions that never connect hold their slots until DELETE
        for _ in range(2):
            async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=SDP) as response:
                assert response.status == 201, await response.text()
                held.append(response.headers["Location"])
        no_token = {"Content-Type": "application/sdp"}
        async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=no_token) as response:
            assert response.status == 401, await response.text()
        async with http.post(f"{two_workers.url}/v1/sessions", data="hello", headers=SDP) as response:
            assert response.status == 400 and "malformed SDP" in (await response.json())["error"]
        async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=AUTH) as response:
            assert response.status == 415, await response.text()
        for location in held:
            async with http.delete(f"{two_workers.url}{location}", headers=AUTH) as response:
                assert response.status == 204


async def test_a_sessions_status_names_it_by_the_id_the_front_gave(two_workers: Served) -> None:
    """Not by its worker's own id, which the front does not route (once {"id": "Xy3..."} for 1.Xy3...)."""
    async with aiohttp.ClientSession() as http:
        await health(http, two_workers)
        offer = await client_offer("sendrecv", "recvonly")
        async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=SDP) as response:
            location = response.headers["Location"]
        public_id = location.rsplit("/", 1)[1]
        async with http.get(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert (await response.json())["id"] == public_id
        async with http.head(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert response.status == 200  # headers only: nothing to rename (once a 500)
        async with http.put(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert f"PUT {location}" in (await response.json())["error"]
        async with http.delete(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert response.status == 204
        async with http.get(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert f"session {public_id} has ended" in (await response.json())["error"]
        async with http.delete(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert f"no session {public_id}:" in (await response.json())["error"]


async def test_a_hung_worker_does_not_hold_up_the_fronts_health_or_admissions(two_workers: Served) -> None:
    """A worker that stops answering (here SIGSTOP) without exiting: the front's /healthz answers a
    health checker that waits 10 s, and a new session goes to the other worker. Once both waited
    the 30 s an offer may take."""
    checker = aiohttp.ClientTimeout(total=10.0)
    async with aiohttp.ClientSession(timeout=checker) as http:
        await health(http, two_workers)
        hung = two_workers.workers()[0]
        os.kill(hung, signal.SIGSTOP)
        try:
            async with http.get(f"{two_workers.url}/healthz") as response:
                assert (await response.json())["max_sessions"] == 1  # the hung worker's share is not offered
            offer = await client_offer("sendrecv", "recvonly")
            async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=SDP) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
            async with http.delete(f"{two_workers.url}{location}", headers=AUTH) as response:
                assert response.status == 204
        finally:
            os.kill(hung, signal.SIGCONT)
        await health(http, two_workers)


async def test_an_id_with_url_syntax_in_it_means_the_same_at_the_worker(two_workers: Served) -> None:
    """The front decodes the id: "0.Xy3%3Fa" once reached the worker as /v1/sessions/Xy3?a and
    answered for session 0.Xy3; one server answers 404 for it, as for any id it never gave."""
    async with aiohttp.ClientSession() as http:
        await health(http, two_workers)
        offer = await client_offer("sendrecv", "recvonly")
        async with http.post(f"{two_workers.url}/v1/sessions", data=offer, headers=SDP) as response:
            location = response.headers["Location"]
        for suffix in ("%3Fa", "%23a", "%2Fviewers%2Fa"):
            async with http.get(f"{two_workers.url}{location}{suffix}", headers=AUTH) as response:
                assert response.status == 404, (suffix, await response.text())
        async with http.delete(f"{two_workers.url}{location}", headers=AUTH) as response:
            assert response.status == 204


async def test_a_killed_worker_is_reported_and_restarted_and_the_front_keeps_serving(
        two_workers: Served) -> None:
    served = two_workers
    async with aiohttp.ClientSession() as http:
        await health(http, served)
        avatar = await upload(http, served)
        async with published(served, http) as doomed:
            index = int(owner(doomed))
            await asyncio.sleep(1.5)  # the front reads each worker's counters every second
            shown = await text(http, f"{served.url}/metrics")
            started = series(shown, "lipstream_sessions_started_total")
            before = served.workers()
            os.kill(before[index], signal.SIGKILL)
            async with http.delete(f"{served.url}{doomed.location}", headers=AUTH) as response:
                assert response.status == 404  # its sessions ended with it
            # no summed counter steps down: the front kept what it showed of the dead worker's
            # counters, not their last once-a-second read (a Prometheus rate() reads a step down
            # as a reset, a spike of the whole total)
            after = counted(await text(http, f"{served.url}/metrics"))
            assert [s for s, value in counted(shown).items() if after.get(s, 0.0) < value] == []
            async with published(served, http) as survivor:  # the other worker still admits
                assert await still_streaming(survivor, 5)
            assert (await health(http, served, workers=2))["max_sessions"] == 2  # restarted
            metrics = await text(http, f"{served.url}/metrics")
            assert series(metrics, 'lipstream_sessions_ended_total{reason="worker_exited"}') == 1
            assert series(metrics, "lipstream_worker_restarts_total") == 1
            # the dead worker's counters stay in the sums: the survivor's session adds one
            assert series(metrics, "lipstream_sessions_started_total") == started + 1
            assert before[index] not in served.workers() and len(served.workers()) == 2
        async with published(served, http, avatar) as uploaded:  # only the survivor still has it
            assert int(owner(uploaded)) != index and await still_streaming(uploaded, 5)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_no_worker_outlives_the_front(stop: signal.Signals) -> None:
    """SIGTERM: an orderly stop of everything within 5 s; SIGKILL (a crash): the workers see their
    pipe close and stop by themselves."""
    with serve("--workers", "2", "--max-sessions", "2") as served:
        async with aiohttp.ClientSession() as http:
            await health(http, served)
            workers = served.workers()
            async with published(served, http) as publisher:
                start = time.monotonic()
                served.process.send_signal(stop)
                while any(alive(pid) for pid in workers) and time.monotonic() - start < 10:
                    await asyncio.sleep(0.05)
                elapsed = time.monotonic() - start
                assert not any(alive(pid) for pid in workers), f"workers still running {elapsed:.1f} s on"
                assert elapsed < 5
                assert publisher.location is not None
        served.process.wait(5)


WRITTEN_S = 0.5  # the front writes a worker's config as soon as it has spawned it; loading takes seconds


async def test_a_front_killed_while_its_workers_start_leaves_none_running() -> None:
    """The pipe is watched only once a worker serves; before that (loading the engine, minutes
    on a starved machine: 117 workers of a killed front were still starting 8 minutes on) the
    kernel's parent-death signal ends them."""
    with serve("--workers", "2", "--max-sessions", "2") as served:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(workers := served.workers()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(workers) == 2
        await asyncio.sleep(WRITTEN_S)  # the front has written their config: they are loading
        served.process.kill()
        start = time.monotonic()
        while any(alive(pid) for pid in workers) and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        assert not any(alive(pid) for pid in workers), f"workers still running {elapsed:.1f} s on"
        assert elapsed < 1


def test_a_worker_that_cannot_start_is_one_line_and_exit_2() -> None:
    port = str(free_port())
    done = subprocess.run([sys.executable, "-m", "lipstream", "serve", "--workers", "2", "--port", port,
                           "--face", __file__], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "use a JPEG or PNG photo" in done.stderr and "exited with code 2 while starting" in done.stderr


def test_summed_metrics_keep_one_family_per_name_and_add_label_by_label() -> None:
    a = ('# HELP x_total X\n# TYPE x_total counter\nx_total{r="a"} 1.0\nx_total{r="b"} 2.0\n'
         '# HELP x_created X\n# TYPE x_created gauge\nx_created{r="a"} 5.0\n')
    b = '# HELP x_total X\n# TYPE x_total counter\nx_total{r="a"} 3.0\n# HELP x_created X\n' \
        '# TYPE x_created gauge\nx_created{r="a"} 4.0\n'
    assert sum_exposition([a, b]) == ('# HELP x_total X\n# TYPE x_total counter\nx_total{r="a"} 4.0\n'
                                      'x_total{r="b"} 2.0\n# HELP x_created X\n# TYPE x_created gauge\n'
                                      'x_created{r="a"} 4.0\n')


def test_a_workers_counters_outlive_it_but_not_its_gauges() -> None:
    text = ('# HELP g Now\n# TYPE g gauge\ng 3.0\n# HELP c_total C\n# TYPE c_total counter\nc_total 2.0\n'
            '# HELP c_created C\n# TYPE c_created gauge\nc_created 5.0\n# HELP h H\n# TYPE h histogram\n'
            'h_bucket{le="+Inf"} 1.0\nh_count 1.0\nh_sum 0.5\n')
    assert counters_only(text) == ('# HELP c_total C\n# TYPE c_total counter\nc_total 2.0\n# HELP h H\n'
                                   '# TYPE h histogram\nh_bucket{le="+Inf"} 1.0\nh_count 1.0\nh_sum 0.5\n')


async def test_without_a_token_the_front_checks_host_and_origin_and_workers_serve_it() -> None:
    """The loopback default (no token, one worker per core): the worker's Host check must not refuse
    its own front (it once read a unix socket's name as a port, and every request failed)."""
    with serve("--workers", "2", "--max-sessions", "2") as served:
        async with aiohttp.ClientSession() as http:
            await health(http, served)
            publisher = Publisher(served.url, SILENCE)
            await publisher.start(http)
            await asyncio.wait_for(publisher.connected.wait(), 15)
            assert await still_streaming(publisher, 5)
            async with http.get(f"{served.url}{publisher.location}") as response:
                assert response.status == 200, await response.text()
            form = aiohttp.FormData()
            form.add_field("photo", photo(), filename="me.png", content_type="image/png")
            async with http.post(f"{served.url}/v1/avatars", data=form) as response:
                uploaded = (await response.json())["id"]
            for avatar in ("default", uploaded):  # the page shows the face before Start
                async with http.get(f"{served.url}/v1/avatars/{avatar}/preview") as response:
                    assert response.status == 200 and response.content_type == "image/jpeg", avatar
            for headers, status in (({"Host": "evil.example"}, 421),
                                    ({"Origin": "http://evil.example"}, 403)):
                async with http.post(f"{served.url}/v1/avatars", data=photo(),
                                     headers=headers | {"Content-Type": "image/png"}) as response:
                    assert response.status == status and "error" in await response.json()
            await publisher.stop(http)


async def test_a_verbose_front_makes_verbose_workers() -> None:
    """`lipstream -v serve`: the per-sender rate lines are logged in the workers, where the
    senders are; they logged at INFO whatever the front was asked."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lipstream", "-v", "serve", "--workers", "2",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await health(http, Served(process, f"http://127.0.0.1:{port}"))
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    logged = stderr.decode()
    for index in (0, 1):
        assert re.search(rf"worker-{index} \S+ DEBUG ", logged), logged[-3000:]


async def test_the_front_and_its_workers_run_on_uvloop() -> None:
    """Each worker carries its sessions' packets on uvloop's loop when uvloop is installed (a
    dependency); the front relays on it too. Sessions through such workers: the tests above."""
    pytest.importorskip("uvloop", reason="uvloop is not installed (it does not support Windows)")
    with serve("--workers", "2") as served:
        async with aiohttp.ClientSession() as http:
            await health(http, served)
        served.process.terminate()
        _, stderr = served.process.communicate(timeout=30)
    logged = stderr.decode()
    for index in (0, 1):
        assert re.search(rf"worker-{index} \S+ INFO lipstream event loop: uvloop", logged), logged[-3000:]
    assert logged.count("lipstream event loop: uvloop") == 3, logged[-3000:]
