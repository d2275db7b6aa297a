"""`lipstream serve` where it cannot listen: one line saying so, exit 2, before seconds of start-up
(a port out of range, a host that is no address, a port another program holds)."""

import os
import socket
import subprocess
import sys

import pytest

from lipstream.cli import build_parser
from lipstream.errors import LipstreamError
from lipstream.streaming.capacity import (
    MAX_WORKERS_PER_CORE,
    WORKER_START_MB,
    available_memory_mb,
    workers_problem,
)
from lipstream.streaming.server import _serve_config


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lipstream", "serve", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "expected"), [
    (["--port", "-1"], "--port -1: use 1 to 65535"),
    (["--port", "99999"], "--port 99999: use 1 to 65535"),
    (["--host", "999.1.1.1"], "--host 999.1.1.1: not an address"),
])
def test_an_impossible_address_is_one_line(args: list[str], expected: str) -> None:
    result = serve(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lipstream serve: error: {expected}"), result.stderr


def test_a_port_in_use_is_one_line_before_start_up() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--port", str(port), "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no URL announced for a server that never listened
    assert result.stderr.strip().splitlines() == [
        f"lipstream serve: error: cannot listen on 127.0.0.1 port {port}: Address already in use: "
        "another program listens there: choose another --port"]


@pytest.mark.parametrize("seconds", ["0", "-5", "nan"])
def test_a_session_length_that_is_no_length_is_refused(seconds: str) -> None:
    """NaN passed the '<= 0' check and quietly meant 'no limit'."""
    args = build_parser("serve").parse_args(["serve", "--max-session-s", seconds, "--device", "cpu"])
    with pytest.raises(LipstreamError, match="--max-session-s must be more than 0"):
        _serve_config(args)


@pytest.mark.parametrize("workers", ["1000", "100000"])
def test_more_workers_than_the_machine_holds_are_refused_before_any_starts(workers: str) -> None:
    """Each worker loads the whole engine (~315 MB): --workers 1000 started workers until the
    machine's memory and CPU ran out (load average 300 on 2 cores)."""
    result = serve("--workers", workers, "--port", "0")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lipstream serve: error: --workers {workers} is "), lines
    assert "use at most" in lines[0]


def test_the_workers_a_machine_holds_are_bounded_by_its_cores_and_memory() -> None:
    cores = os.cpu_count() or 1
    assert workers_problem(1) is None
    assert "per core" in (workers_problem(cores * MAX_WORKERS_PER_CORE + 1) or "")
    free_mb = available_memory_mb()
    if free_mb is not None and free_mb // WORKER_START_MB + 1 <= cores * MAX_WORKERS_PER_CORE:
        assert "MB is available" in (workers_problem(free_mb // WORKER_START_MB + 1) or "")
