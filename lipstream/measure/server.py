"""A `lipstream serve` to measure: spawned on a free loopback port, or given by URL; its /metrics.

Benchmarks measure the server as users run it (a subprocess with its own CPU and memory), so its
resident memory is read from /proc and its counters from the Prometheus text it serves.
"""

import asyncio
import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aioice.ice

from lipstream.errors import ServerError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HEALTHY_TIMEOUT_S = 90.0  # start-up times an engine and an encoder for capacity: slow on a busy box
# After a Ctrl-C: a terminal sends it to the whole process group, the spawned server too, and a
# server stops itself in well under this. Stopped again while it does, aiohttp raises out of its
# own clean-up with a traceback, so it is given this long before it is told to stop.
OWN_STOP_S = 5.0
STOP_WAIT_S = 10.0  # after terminate(): then it is killed
BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    """The server being measured; `pid` is None when it was given by URL (no /proc to read)."""

    url: str
    pid: int | None = None


def loopback_only() -> None:
    """NOTES.md: aioice skips 127.0.0.1, so gather only it: every packet stays on the machine."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def spawned_server(*serve_args: str) -> Iterator[Target]:
    """Run `lipstream serve` on a free loopback port until the block ends, then stop it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--host", "127.0.0.1",
                               "--port", str(port), *serve_args])
    try:
        target = Target(f"http://127.0.0.1:{port}", server.pid)
        asyncio.run(wait_healthy(target.url, server))
        yield target
    except KeyboardInterrupt:
        _wait(server, OWN_STOP_S)
        raise
    finally:
        server.terminate()
        if not _wait(server, STOP_WAIT_S):
            server.kill()
            server.wait()


def _wait(process: "subprocess.Popen[bytes]", timeout_s: float) -> bool:
    """True once `process` has exited, within `timeout_s`."""
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def server_pids(pid: int) -> list[int]:
    """The server and its workers (children), as /proc lists them now."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def server_cpu_s(pid: int) -> float:
    """CPU seconds of the server and its worker processes: a `--workers N` server's sessions run
    in the workers, so the front's own figure would miss nearly all of it."""
    return sum(cpu_seconds(p) for p in server_pids(pid) if Path(f"/proc/{p}").exists())


def machine_busy_s() -> float:
    """CPU seconds every program on the machine has run (not idle, not I/O wait) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


async def wait_healthy(url: str, server: "subprocess.Popen[bytes] | None" = None) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if server is not None and server.poll() is not None:
                raise SystemExit(f"lipstream serve exited with {server.returncode} before it was healthy")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url}/healthz did not answer 200 within {HEALTHY_TIMEOUT_S:.0f} s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc/PID/status (VmRSS is in kB); nan once gone."""
    try:
        found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:  # a worker that exited between listing and reading
        return float("nan")
    return int(found.group(1)) * 1024 / BYTES_PER_MB if found else float("nan")


def server_rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes: with `--workers N` the sessions'
    memory is in the workers."""
    return sum(mb for mb in map(rss_mb, server_pids(pid)) if not math.isnan(mb))  # nan: exited meanwhile


def base_url(url: str) -> str:
    """A server's URL as paths are added to it: `lipstream serve` prints its own with a trailing
    slash, and `URL//metrics` is a 404."""
    return url.rstrip("/")


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as response:
        if response.status != 200:  # a 404 page read as metrics would be a report of zeros
            raise ServerError(f"{url}/metrics answered {response.status} {response.reason}: "
                              "is this the URL of a lipstream serve?")
        return await response.text()


def frame_counts(metrics_text: str) -> dict[str, float]:
    """lipstream_frames_total by result (rendered, skipped, late)."""
    found = re.findall(r'^lipstream_frames_total\{result="(\w+)"\} ([\d.e+-]+)$', metrics_text, re.M)
    return {result: float(value) for result, value in found}


def stage_totals(metrics_text: str, what: str) -> dict[str, float]:
    """`sum` or `count` of each lipstream_stage_seconds histogram, by stage."""
    pattern = rf'^lipstream_stage_seconds_{what}\{{stage="(\w+)"\}} ([\d.e+-]+)$'
    return {stage: float(v) for stage, v in re.findall(pattern, metrics_text, re.M)}


def histogram_totals(metrics_text: str, what: str) -> dict[str, float]:
    """`sum` or `count` of the unlabelled histograms of the input path: the inbox's depth when a
    frame takes its audio (`input_depth`) and how early frames are started (`producer_lead`)."""
    pattern = rf'^lipstream_(input_depth|producer_lead)_seconds_{what} ([\d.e+-]+)$'
    return {name: float(v) for name, v in re.findall(pattern, metrics_text, re.M)}


def stage_means_ms(before: str, after: str) -> dict[str, float]:
    """Mean time per stage (and of the input path's histograms) between two scrapes."""
    sums = stage_totals(after, "sum") | histogram_totals(after, "sum")
    counts = stage_totals(after, "count") | histogram_totals(after, "count")
    sums0 = stage_totals(before, "sum") | histogram_totals(before, "sum")
    counts0 = stage_totals(before, "count") | histogram_totals(before, "count")
    return {stage: (sums[stage] - sums0.get(stage, 0)) / n * 1000
            for stage in sums if (n := counts.get(stage, 0) - counts0.get(stage, 0)) > 0}
