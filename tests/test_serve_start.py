"""`lipstream serve` where it cannot listen: one line saying so, exit 2, before seconds of start-up
(a port out of range, a host that is no address, a port another program holds)."""

import socket
import subprocess
import sys

import pytest

from lipstream.cli import build_parser
from lipstream.errors import LipstreamError
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
