"""The benchmarks' reading of a server's CPU and memory from /proc: a `--workers N` server does its
work in child processes, which must be counted with it."""

import os
import signal
import subprocess
import sys
import time

from lipstream.measure.server import rss_mb, server_cpu_s, server_pids, server_rss_mb

# A parent that only waits, and a child that spins for a while: like a front and its worker.
WORKER = ("import time\\nend = time.process_time() + {spin}\\n"
          "while time.process_time() < end: pass\\ntime.sleep(30)")
FRONT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', '{WORKER}'])"
SPIN_S = 0.5
# A child holding memory: 200 MB written, so resident
HOLDER = "import time\\nheld = bytearray(200 * 2**20)\\nprint(flush=True)\\ntime.sleep(30)"
HELD_MB = 200


def test_the_server_cpu_includes_its_workers() -> None:
    front = subprocess.Popen([sys.executable, "-c", FRONT.format(spin=SPIN_S)])
    try:
        deadline = time.monotonic() + 30
        while server_cpu_s(front.pid) < SPIN_S and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server_cpu_s(front.pid) >= SPIN_S  # the front alone used almost none of it
    finally:
        for pid in reversed(server_pids(front.pid)):  # the worker, then the front
            os.kill(pid, signal.SIGKILL)
        front.wait()


def test_the_server_memory_includes_its_workers() -> None:
    """soak.py read the front's memory only: a growing worker would not have shown."""
    front = subprocess.Popen([sys.executable, "-c",
                              f"import subprocess, sys; subprocess.run([sys.executable, '-c', '{HOLDER}'])"])
    try:
        deadline = time.monotonic() + 30
        while server_rss_mb(front.pid) - rss_mb(front.pid) < HELD_MB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server_rss_mb(front.pid) - rss_mb(front.pid) >= HELD_MB
    finally:
        for pid in reversed(server_pids(front.pid)):
            os.kill(pid, signal.SIGKILL)
        front.wait()
