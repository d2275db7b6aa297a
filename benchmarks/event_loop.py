"""The workers' event loop, uvloop against asyncio's own: CPU per session-frame, side by side.

    .venv/bin/python benchmarks/event_loop.py --sessions 4 --rounds 6 --seconds 15

Two `lipstream serve --workers 2` run at once, one with LIPSTREAM_EVENT_LOOP=uvloop and one with
=asyncio. Each round, each server in turn (the order alternates) gets N aiortc publishers sending
speech (Opus replayed, nothing decoded: sessions.py's clients); after a warm-up, the CPU of the
workers' event-loop threads (the thread whose id is the worker's pid) and of the whole workers is
read from /proc over the window, per session-frame. Prints each round and the medians, the ratio
of medians, and writes JSON. The machine is shared: read ratios, not absolute figures.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import aiohttp

# sessions.py lies beside this script (the script's folder is first on sys.path)
from sessions import count_only, live_clients

from lipstream.engine.constants import VIDEO_FPS
from lipstream.measure.output import write_json
from lipstream.measure.server import CLOCK_TICKS, free_port, loopback_only, server_pids, wait_healthy
from lipstream.streaming.eventloop import ENV

LOOPS = ("uvloop", "asyncio")
PAUSE_S = 2.0  # between two measurements, for the last sessions' teardown


def thread_cpu_s(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def workers_cpu_s(pid: int) -> tuple[float, float]:
    """(event-loop threads, whole workers) CPU seconds of the server's workers."""
    workers = server_pids(pid)[1:]
    loops = sum(thread_cpu_s(w, w) for w in workers)
    whole = sum(thread_cpu_s(w, int(t)) for w in workers for t in os.listdir(f"/proc/{w}/task"))
    return loops, whole


def spawn(loop: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--port", str(port),
                                "--workers", "2", "--max-sessions", "64"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, ENV: loop})
    return process, f"http://127.0.0.1:{port}"


async def measure(url: str, pid: int, sessions: int, seconds: float, warmup_s: float) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, live_clients(http, url, sessions, seconds, warmup_s):
        (loop0, whole0), t0 = workers_cpu_s(pid), time.monotonic()
        await asyncio.sleep(seconds)
        (loop1, whole1), wall = workers_cpu_s(pid), time.monotonic() - t0
    per_frame_ms = 1000 / (wall * sessions * VIDEO_FPS)
    return {"loop_ms": (loop1 - loop0) * per_frame_ms, "workers_ms": (whole1 - whole0) * per_frame_ms}


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    servers = {loop: spawn(loop) for loop in LOOPS}
    rounds: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    try:
        for process, url in servers.values():
            await wait_healthy(url, process)
        print(f"{'round':>5} {'loop':>8} {'event loop ms':>14} {'workers ms':>11}   (CPU per session-frame)")
        for r in range(args.rounds):
            for loop in LOOPS if r % 2 == 0 else LOOPS[::-1]:
                process, url = servers[loop]
                row = await measure(url, process.pid, args.sessions, args.seconds, args.warmup)
                rounds[loop].append(row)
                print(f"{r:>5} {loop:>8} {row['loop_ms']:>14.2f} {row['workers_ms']:>11.2f}", flush=True)
                await asyncio.sleep(PAUSE_S)
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            process.wait(15)
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/event_loop.json"))
    args = parser.parse_args()
    if args.sessions < 1 or args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--sessions and --rounds from 1, --seconds above 0, --warmup from 0")
    count_only()
    loopback_only()
    rounds = asyncio.run(run(args))
    medians = {loop: {k: median(r[k] for r in rows) for k in ("loop_ms", "workers_ms")}
               for loop, rows in rounds.items()}
    print()
    for loop, m in medians.items():
        print(f"median {loop:>8}: event loop {m['loop_ms']:.2f} ms, workers {m['workers_ms']:.2f} ms "
              "per session-frame")
    ratio = {k: medians["uvloop"][k] / medians["asyncio"][k] for k in ("loop_ms", "workers_ms")}
    print(f"uvloop / asyncio: event loop x{ratio['loop_ms']:.2f}, workers x{ratio['workers_ms']:.2f}")
    write_json(args.out, {"sessions": args.sessions, "seconds": args.seconds, "rounds": rounds,
                          "medians": medians, "ratio_uvloop_over_asyncio": ratio})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
