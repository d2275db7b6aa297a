"""The latency instruments: the mouth-open detector agrees with FaceMesh, and a measurement
against a real server recovers a delay injected on purpose."""

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from lipstream.cli import main
from lipstream.engine.avatar import Avatar
from lipstream.engine.render import Renderer
from lipstream.measure.latency import (
    LatencyConfig,
    connected,
    first_open_after,
    measure,
    not_in_time_fraction,
    onset_schedule,
)
from lipstream.measure.mouth import MouthOpenDetector, jaw_controls
from lipstream.measure.report import BUSY_FRACTION, injected_delay_recovered_ms
from lipstream.measure.server import free_port
from lipstream.streaming.client import Publisher
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES, FRAME_S
from lipstream.streaming.server import ServeConfig
from tests.serving import SILENCE, loopback_only, running_server

# A whole number of frames, so the first open frame moves by exactly that many: 100 ms (2.5
# frames) measures as 80 or 120 ms, depending on where the onsets fall within their frames.
INJECTED_DELAY_MS = 3 * FRAME_S * 1000
TOLERANCE_MS = 30.0  # medians of several onsets on a shared 2-core machine
TOKEN = "latency-test-token"


@pytest.fixture(scope="module")
def detector() -> MouthOpenDetector:
    return MouthOpenDetector(Avatar.default(), size=256)


@pytest.mark.parametrize("index", [3, 61, 140, 222])  # different idle poses and blinks than calibration
def test_detector_and_facemesh_agree_on_rendered_frames(detector: MouthOpenDetector, index: int) -> None:
    renderer = Renderer(Avatar.default(), seed=7)
    closed, opened = (renderer.render(jaw_controls(jaw), index) for jaw in (0.0, 0.6))
    assert not detector.is_open(closed) and detector.facemesh_open(closed) is False
    assert detector.is_open(opened) and detector.facemesh_open(opened) is True
    assert detector.score(opened) > 4 * detector.threshold > 4 * detector.score(closed)


@pytest.mark.slow
async def test_an_injected_delay_is_recovered(monkeypatch: pytest.MonkeyPatch,
                                              detector: MouthOpenDetector) -> None:
    """Every other burst starts 120 ms after its stamped onset: those onsets measure 120 ms more.

    Delayed and plain onsets alternate in one session, so a busy machine slows both alike.
    """
    loopback_only(monkeypatch)
    config = LatencyConfig(onsets=10, inject_delay_s=INJECTED_DELAY_MS / 1000)
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False)) as server:
        run = await measure(server.url, config, detector)
    recovered = injected_delay_recovered_ms(run.onsets)
    if run.skipped_fraction > BUSY_FRACTION:  # the benchmark's own validity rule
        pytest.skip(f"the server skipped {run.skipped_fraction:.0%} of frames (busy machine): "
                    f"a latency measured now is not the server's (recovered {recovered} ms)")
    measured = [o for o in run.onsets if not np.isnan(o.to_rtp_ms)]
    delayed = sum(o.injected_delay_ms > 0 for o in measured)
    assert min(delayed, len(measured) - delayed) >= 3, run.onsets
    assert run.detector_agreement > 0.9
    assert abs(recovered - INJECTED_DELAY_MS) <= TOLERANCE_MS, (recovered, run.skipped_fraction, run.onsets)


def test_bursts_start_on_their_stamped_chunk_or_exactly_the_injected_delay_after() -> None:
    config = LatencyConfig(onsets=4, inject_delay_s=0.1)
    pcm, starts = onset_schedule(config)
    first_voiced = [int(np.flatnonzero(np.abs(pcm[s * AUDIO_CHUNK_SAMPLES:]) > 0)[0]) for s in starts]
    expected = np.array([0, 1600, 0, 1600])  # 100 ms at 16 kHz on every other onset
    assert np.all((first_voiced - expected >= 0) & (first_voiced - expected < 16)), first_voiced  # < 1 ms
    assert np.all(np.abs(pcm[: starts[0] * AUDIO_CHUNK_SAMPLES]) == 0)  # the lead-in is silent


def test_an_onset_counts_only_if_the_mouth_was_at_rest_when_it_was_sent() -> None:
    times = np.arange(10) * 0.04
    closed_then_open = [False] * 5 + [True] * 5
    assert first_open_after(0.1, 1.0, times, closed_then_open) == 5
    assert first_open_after(0.1, 0.1, times, closed_then_open) is None  # beyond the window
    assert first_open_after(0.25, 1.0, times, closed_then_open) is None  # already open at the onset


def test_frames_not_in_time_never_exceed_the_frames_made() -> None:
    """Skipped frames can also be late: on a loaded run the sum read over 100%."""
    assert not_in_time_fraction({"rendered": 10, "skipped": 90, "late": 80}) == 1.0
    assert not_in_time_fraction({"rendered": 95, "skipped": 5, "late": 5}) == 0.1
    assert math.isnan(not_in_time_fraction({}))


async def bench_latency(url: str, out: Path, *extra: str) -> int:
    """`lipstream bench --latency URL`, as a user runs it (in a thread: it runs its own event loop)."""
    argv = ["bench", "--latency", url, "--onsets", "1", "--json", str(out), *extra]
    return await asyncio.to_thread(main, argv)


async def test_bench_latency_says_in_one_line_why_a_server_cannot_be_measured(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Nothing listening, a token not given, a full server: exit 2 and one line saying which, not
    a traceback; with --token the same server is measured."""
    loopback_only(monkeypatch)
    out = tmp_path / "latency.json"
    assert await bench_latency(f"http://127.0.0.1:{free_port()}", out) == 2
    assert "cannot reach" in one_error_line(capsys)
    async with running_server(ServeConfig(max_sessions=1, token=TOKEN, loopback_ice=False)) as server:
        assert await bench_latency(server.url, out) == 2
        assert "refused the session: 401" in one_error_line(capsys)
        occupant = Publisher(server.url, SILENCE, token=TOKEN)
        async with aiohttp.ClientSession() as http:
            await occupant.start(http)
            assert await bench_latency(server.url, out, "--token", TOKEN) == 2
            assert "refused the session: 503" in one_error_line(capsys)
            await occupant.stop(http)
        # the URL as `lipstream serve` prints it, with a trailing slash
        assert await bench_latency(f"{server.url}/", out, "--token", TOKEN) == 0
    assert not capsys.readouterr().err.strip()
    assert json.loads(out.read_text())["run"]["server_frames"]["rendered"] > 0  # its /metrics was read


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lipstream bench: error: ") and "\n" not in err, err
    return err


def _as_in_a_terminal() -> None:
    """Ctrl-C handled as in a terminal's foreground job, whoever runs the tests: a shell starts a
    background job (`./run test &`, a CI step launched that way) with SIGINT ignored, its children
    inherit that, and the bench then never saw the Ctrl-C (it waited out its 30 s media timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_bench_spawn_quietly_with_its_server(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the bench and the server it spawned (one process group) while
    a session runs: exit 130, no error about the server having gone, no server left behind."""
    bench = subprocess.Popen([sys.executable, "-m", "lipstream", "bench", "--spawn", "--onsets", "4",
                              "--json", str(tmp_path / "latency.json")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, preexec_fn=_as_in_a_terminal)
    assert bench.stdout is not None
    said = []
    for line in bench.stdout:  # both ends log ICE at INFO: the session is connecting or live
        said.append(line)
        if "ICE completed" in line:
            break
    servers = subprocess.run(["pgrep", "-P", str(bench.pid)], capture_output=True, text=True).stdout.split()
    os.killpg(bench.pid, signal.SIGINT)
    said.append(bench.communicate(timeout=60)[0])
    output = "".join(said)
    assert bench.returncode == 130, output
    assert "lipstream bench: error" not in output and "Traceback" not in output, output
    assert servers and not any(Path(f"/proc/{pid}").exists() for pid in servers)


async def test_a_ctrl_c_lost_before_the_wait_for_media_still_stops_the_run() -> None:
    """Python 3.11's asyncio.wait_for (aiortc and aioice use it) can swallow a cancellation that
    comes as what it waits for does; the Ctrl-C then stayed pending on the task, unhonoured, and
    the bench waited out its 30 s media timeout for a server the same Ctrl-C had stopped (seen
    once in CI: exit 2 and an error instead of 130)."""
    url = f"http://127.0.0.1:{free_port()}"
    publisher = Publisher(url, SILENCE)
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # code that swallows it, without uncancel()
        await asyncio.sleep(0)
    try:
        with pytest.raises(asyncio.CancelledError):
            await connected(publisher, url, timeout_s=5.0)
    finally:
        task.uncancel()


@pytest.mark.parametrize("onsets", ["0", "-3", "100000"])
def test_bench_latency_refuses_a_number_of_onsets_it_cannot_send(
        onsets: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """No bursts (an IndexError before) or more than fit in memory (it allocated for hours of
    audio): one line and exit 2, before any server is contacted."""
    argv = ["bench", "--latency", f"http://127.0.0.1:{free_port()}", "--onsets", onsets,
            "--json", str(tmp_path / "out.json")]
    assert main(argv) == 2
    assert f"--onsets {onsets}: send at least 1" in one_error_line(capsys)
