"""How many 512 px sessions hold 25 fps: N rising against `lipstream serve --workers W`, per W.

    .venv/bin/python benchmarks/capacity.py --workers 1 2 --start 4 --step 2 --seconds 15

It spawns one server per W (`--max-sessions` far above any N tried), then for N = start, start +
step, ..., and for each W in turn at that N (so every W sees the same machine): connects N aiortc
publishers sending speech-like audio (as in sessions.py: Opus encoded once and replayed; they count
what they receive from RTP arrivals and decode neither video nor audio), waits out a warm-up,
measures, and ends the sessions. N stops rising for a W once skipped or late frames exceed
--limit-percent (1%) (with --keep-going, at --max). Per N it prints fps per session (median and lowest),
skipped and late frames (% of frames due, from the server's /metrics, summed over workers by the
front), the CPU the server used (front and workers, in cores), its RSS per session (above the idle
server's), the CPU other programs used meanwhile and the load average; then the largest N that held,
per W. Writes JSON.

With --baseline DIR, each W also runs a server from another source tree (e.g. a `git worktree` of
main), interleaved with this tree's at every N: an A/B in one run, both seeing the same machine.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import aiohttp
import aioice.ice

# sessions.py lies beside this script (the script's folder is first on sys.path)
from sessions import count_only, live_clients

from lipstream.measure.server import (
    frame_counts,
    free_port,
    machine_busy_s,
    server_cpu_s,
    server_rss_mb,
    wait_healthy,
)
from lipstream.streaming.client import Publisher, fps_and_max_gap

MAX_SESSIONS = 64  # the server's limit: never the thing measured here


async def metrics_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as response:
        return await response.text()


async def run_sessions(url: str, pid: int, sessions: int, seconds: float, warmup_s: float,
                       idle_rss_mb: float) -> dict:
    async with (aiohttp.ClientSession() as http,
                live_clients(http, url, sessions, seconds, warmup_s) as publishers):
        return await measure(http, url, pid, publishers, seconds, idle_rss_mb)


async def measure(http: aiohttp.ClientSession, url: str, pid: int, publishers: list[Publisher],
                  seconds: float, idle_rss_mb: float) -> dict:
    before = frame_counts(await metrics_text(http, url))
    since, server_before, machine_before = time.monotonic(), server_cpu_s(pid), machine_busy_s()
    client_before = time.process_time()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - since
    server = (server_cpu_s(pid) - server_before) / wall
    client = (time.process_time() - client_before) / wall
    others = (machine_busy_s() - machine_before) / wall - server - client
    after = frame_counts(await metrics_text(http, url))
    frames = {k: after.get(k, 0) - before.get(k, 0) for k in ("rendered", "skipped", "late")}
    fps = [session_fps(p, since) for p in publishers]
    due = max(frames["rendered"] + frames["skipped"], 1)  # late frames are also counted as made
    n = len(publishers)
    return {"sessions": n, "fps_median": median(fps), "fps_min": min(fps),
            "skipped_percent": frames["skipped"] / due * 100, "late_percent": frames["late"] / due * 100,
            "frames": frames, "server_cpu_cores": server, "client_cpu_cores": client,
            "other_programs_cpu_cores": max(others, 0.0),
            "rss_mb_per_session": (server_rss_mb(pid) - idle_rss_mb) / n,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3]}


def session_fps(publisher: Publisher, since: float) -> float:
    arrivals = sorted(t for t in publisher.received.rtp_arrival["video"].values() if t >= since)
    return fps_and_max_gap(arrivals)[0] if len(arrivals) > 1 else 0.0


def holds(row: dict, limit_percent: float) -> bool:
    return row["skipped_percent"] <= limit_percent and row["late_percent"] <= limit_percent


@dataclass
class Server:
    workers: int
    label: str  # which source tree: "this" or "base"
    url: str
    process: subprocess.Popen[bytes]
    idle_rss_mb: float = 0.0
    rows: list[dict] = field(default_factory=list)


def spawn(workers: int, tree: Path | None = None) -> Server:
    """A server of this source tree, or of `tree` (its `lipstream` imported first)."""
    port = free_port()
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--port", str(port),
                                "--workers", str(workers), "--max-sessions", str(MAX_SESSIONS)],
                               stdout=subprocess.DEVNULL, env=env)
    return Server(workers, "this" if tree is None else "base", f"http://127.0.0.1:{port}", process)


async def side_by_side(servers: list[Server], args: argparse.Namespace) -> None:
    """For each N, each server in turn (so both see the same machine), until every one fails."""
    for server in servers:
        await wait_healthy(server.url, server.process)
    await asyncio.sleep(2)  # let the workers' start-up work settle
    for server in servers:
        server.idle_rss_mb = server_rss_mb(server.process.pid)
    print(HEADER, flush=True)
    rising = list(servers)
    for sessions in range(args.start, args.max + 1, args.step):
        for server in list(rising):
            row = await run_sessions(server.url, server.process.pid, sessions, args.seconds, args.warmup,
                                     server.idle_rss_mb)
            print_row(server, row, args.limit_percent)
            server.rows.append(row)
            if not (holds(row, args.limit_percent) or args.keep_going):
                rising.remove(server)
            await asyncio.sleep(2)  # the ended sessions' teardown is not the next run's load
        if not rising:
            return


HEADER = (f"{'tree':>4} {'workers':>7} {'N':>3} {'fps med':>7} {'fps min':>7} {'skipped %':>9} {'late %':>6} "
          f"{'server cores':>12} {'RSS MB/sess':>11} {'clients':>7} {'others':>6} {'loadavg':>7}  holds")


def print_row(server: Server, row: dict, limit_percent: float) -> None:
    print(f"{server.label:>4} {server.workers:>7} {row['sessions']:>3} "
          f"{row['fps_median']:>7.2f} {row['fps_min']:>7.2f} "
          f"{row['skipped_percent']:>9.1f} {row['late_percent']:>6.1f} {row['server_cpu_cores']:>12.2f} "
          f"{row['rss_mb_per_session']:>11.0f} {row['client_cpu_cores']:>7.2f} "
          f"{row['other_programs_cpu_cores']:>6.2f} {row['loadavg'][0]:>7}  "
          f"{'yes' if holds(row, limit_percent) else 'no'}", flush=True)


def run(args: argparse.Namespace) -> list[Server]:
    trees = [None] if args.baseline is None else [None, args.baseline]
    servers = [spawn(w, tree) for w in args.workers for tree in trees]
    try:
        asyncio.run(side_by_side(servers, args))
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(15)
    return servers


def label(server: Server) -> str:
    return str(server.workers) if server.label == "this" else f"{server.workers} ({server.label})"


def largest_holding(rows: list[dict], limit_percent: float) -> int:
    return max((r["sessions"] for r in rows if holds(r, limit_percent)), default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--max", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--limit-percent", type=float, default=1.0)
    parser.add_argument("--keep-going", action="store_true",
                        help="measure every N up to --max, even past the first that does not hold")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also run servers from this source tree, interleaved (A/B)")
    parser.add_argument("--out", default="benchmarks/results/capacity.json")
    args = parser.parse_args()
    count_only()
    # Loopback only: the clients gather 127.0.0.1, the server (bound to it) adds 127.0.0.1 too.
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    results = {label(server): server.rows for server in run(args)}
    print("\nlargest N holding 25 fps with <= {:.0f}% skipped and late: {}".format(
        args.limit_percent, ", ".join(f"--workers {w}: {largest_holding(rows, args.limit_percent)}"
                                      for w, rows in results.items())))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "limit_percent": args.limit_percent,
                               "seconds": args.seconds, "by_workers": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
