"""VP8 encoder rebuilds (keyframes) per minute with real receivers, with and without the rate hold.

    python benchmarks/rebuilds.py [--seconds 60] [--congest-at 40] [--out results/rebuilds.json]

One server in this process (`create_app`, the real engine and default avatar) and two aiortc
clients (`Publisher`, speech-like audio) connected at once, each through its own UDP relay on
loopback (tests/relay.py). The first session's VP8 sender follows every move of the receiver's
estimate (REMB), as before (`FOLLOW_EVERY_MOVE`); the second holds it as shipped (`RateHold()`);
`--after-first` swaps them; `--browser` makes the receivers two headless Chromium pages (the
server's own page, tests/browser.py; no relay, so no `--congest-at`).
Each sender's `encode` is wrapped: its thread CPU, its bytes, and whether aiortc built a new
libvpx context for the frame (a rebuild, which starts with a keyframe). With `--congest-at S`,
both relays then add a delay to the server's packets that grows by `--ramp-ms-per-s` for
`--ramp-s` (a queue filling at a bottleneck) and the table says how soon each sender's rate fell.
Prints a table and writes JSON (with each sender's rate and estimate over time).
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiortc.codecs
from aiohttp import web
from playwright.async_api import async_playwright

from lipstream.bench import speechlike
from lipstream.measure.server import loopback_only
from lipstream.streaming.client import Publisher
from lipstream.streaming.codecs import TunedVp8Encoder, Vp8Tuning
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.sendrate import FOLLOW_EVERY_MOVE, RateHold
from lipstream.streaming.server import create_app

# The tests' UDP relay and Chromium helpers (tests/relay.py, tests/browser.py), found from the
# repository however the script is started (its own folder is what Python puts on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser import launch, write_fake_mic_wav  # noqa: E402
from tests.relay import Impairment, UdpRelay, relayed  # noqa: E402

RULES = {"before: every move": FOLLOW_EVERY_MOVE, "after: held": RateHold()}
WARMUP_S = 10.0  # the estimate's start-up climb, left out of the per-minute count


@dataclass
class Sender:
    """What one wrapped encoder did, frame by frame."""

    rule: str
    frames: list[dict[str, float]] = field(default_factory=list)


SENDERS: list[Sender] = []


def probe(rule: str, hold: RateHold) -> type[TunedVp8Encoder]:
    """A TunedVp8Encoder with `hold` that records each frame into a new `Sender`."""

    class Probe(TunedVp8Encoder):
        tuning = Vp8Tuning(rate_hold=hold)

        def __init__(self) -> None:
            super().__init__()
            self.sender = Sender(rule)
            SENDERS.append(self.sender)

        def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
            context, start = self.codec, time.thread_time()
            payloads, timestamp = super().encode(frame, force_keyframe)
            self.sender.frames.append({
                "t": time.monotonic(), "cpu_ms": (time.thread_time() - start) * 1000,
                "bytes": sum(len(p) for p in payloads), "rebuilt": self.codec is not context,
                "rate": self.codec.bit_rate, "estimate": self._rate.asked})
            return payloads, timestamp

    return Probe


def install_probes(after_first: bool) -> None:
    """aiortc looks `Vp8Encoder` up at each sender's start: the n-th sender gets the n-th rule."""
    probes = [probe(rule, hold) for rule, hold in RULES.items()][::-1 if after_first else 1]
    made = iter(range(10**6))
    aiortc.codecs.Vp8Encoder = lambda: probes[next(made) % len(probes)]()  # type: ignore[attr-defined]


async def start_server(after_first: bool) -> tuple[web.AppRunner, str]:
    app = create_app(ServeConfig(max_sessions=4, workers=2))  # tunes the encoders: probes after
    install_probes(after_first)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def congest(relays: list[UdpRelay], ramp_ms_per_s: float, ramp_s: float) -> None:
    """A queue filling at a bottleneck: the server's packets arrive later and later."""
    steps = int(ramp_s * 10)
    for step in range(1, steps + 1):
        for relay in relays:
            relay.impair(down=Impairment(delay_ms=ramp_ms_per_s * step / 10))
        await asyncio.sleep(0.1)


async def session(url: str, seed: int, relay_ready: asyncio.Queue, done: asyncio.Event,
                  http: aiohttp.ClientSession, seconds: float) -> None:
    async with relayed(url, seed) as (proxy, relay):
        publisher = Publisher(proxy, speechlike(seconds + 30, seed=seed))
        await publisher.start(http)
        await relay_ready.put(relay)
        await done.wait()
        await publisher.stop(http)


async def run_browsers(args: argparse.Namespace) -> None:
    """Two headless Chromium pages on the server's own page (no relay: no congestion)."""
    runner, url = await start_server(args.after_first)
    with tempfile.TemporaryDirectory() as scratch:
        wav = write_fake_mic_wav(Path(scratch) / "mic.wav", speechlike(20.0))
        async with async_playwright() as playwright:
            context = await launch(playwright, Path(scratch) / "profile", wav)
            for _ in RULES:  # one after the other: the n-th sender gets the n-th rule
                page = await context.new_page()
                await page.goto(url + "/")
                await page.click("#start")
                await asyncio.sleep(3.0)
            await asyncio.sleep(args.seconds)
            await context.close()
    await runner.cleanup()


async def run(args: argparse.Namespace) -> float | None:
    """Two sessions for `args.seconds`; the monotonic time congestion began (None: none)."""
    loopback_only()
    runner, url = await start_server(args.after_first)
    ready: asyncio.Queue = asyncio.Queue()
    done, congested_at, relays = asyncio.Event(), None, []
    async with aiohttp.ClientSession() as http:
        tasks = []
        for seed in range(len(RULES)):  # one after the other: the n-th sender gets the n-th rule
            tasks.append(asyncio.create_task(session(url, seed, ready, done, http, args.seconds)))
            relays.append(await ready.get())
            await asyncio.sleep(1.0)
        start = time.monotonic()
        if args.congest_at is not None:
            await asyncio.sleep(args.congest_at)
            congested_at = time.monotonic()
            await congest(relays, args.ramp_ms_per_s, args.ramp_s)
        await asyncio.sleep(max(0.0, start + args.seconds - time.monotonic()))
        done.set()
        await asyncio.gather(*tasks)
    await runner.cleanup()
    return congested_at


def summary(sender: Sender, congested_at: float | None) -> dict[str, Any]:
    """Rebuilds per minute and CPU per frame after the warm-up (and before congestion)."""
    frames = sender.frames
    start = frames[0]["t"] + WARMUP_S
    end = congested_at if congested_at is not None else frames[-1]["t"]
    steady = [f for f in frames if start <= f["t"] < end]
    minutes = max(end - start, 1e-9) / 60
    row: dict[str, Any] = {
        "rule": sender.rule, "frames": len(steady), "seconds": round(end - start, 1),
        "rebuilds_per_min": sum(f["rebuilt"] for f in steady) / minutes,
        "cpu_ms_median": statistics.median(f["cpu_ms"] for f in steady),
        "cpu_ms_mean": statistics.fmean(f["cpu_ms"] for f in steady),
        "kbps": sum(f["bytes"] for f in steady) * 8 / 1000 / max(end - start, 1e-9),
        "rate_kbps_median": statistics.median(f["rate"] for f in steady) / 1000,
        "estimate_kbps_min_max": [min(f["estimate"] for f in steady) / 1000,
                                  max(f["estimate"] for f in steady) / 1000]}
    rebuilt = [f for f in steady if f["rebuilt"]]
    if rebuilt:
        row["cpu_ms_rebuild_median"] = statistics.median(f["cpu_ms"] for f in rebuilt)
        row["bytes_rebuild_median"] = statistics.median(f["bytes"] for f in rebuilt)
    row["bytes_median"] = statistics.median(f["bytes"] for f in steady)
    if congested_at is not None:
        row.update(response(frames, congested_at))
    return row


def response(frames: list[dict[str, float]], congested_at: float) -> dict[str, Any]:
    """How the sender's rate moved once congestion began."""
    before = [f for f in frames if f["t"] < congested_at][-1]["rate"]
    after = [f for f in frames if f["t"] >= congested_at]
    fell = next((f for f in after if f["rate"] <= 0.8 * before), None)
    return {"rate_at_congestion_kbps": before / 1000,
            "lowest_rate_after_kbps": min(f["rate"] for f in after) / 1000,
            "fell_20pct_after_s": None if fell is None else round(fell["t"] - congested_at, 2),
            "first_estimate_below_80pct_after_s": next(
                (round(f["t"] - congested_at, 2) for f in after if f["estimate"] <= 0.8 * before), None)}


def per_second(sender: Sender) -> dict[str, Any]:
    """The sender's rate and the receiver's estimate once a second (25 frames), and its rebuilds."""
    origin, sampled = sender.frames[0]["t"], sender.frames[::25]
    return {"rule": sender.rule, "t": [round(f["t"] - origin, 2) for f in sampled],
            "rate": [f["rate"] for f in sampled], "estimate": [f["estimate"] for f in sampled],
            "rebuilt_at_s": [round(f["t"] - origin, 2) for f in sender.frames if f["rebuilt"]]}


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| sender | s | rebuilds/min | encode cpu ms p50 | mean | keyframe cpu ms p50 | keyframe bytes "
          "p50 | frame bytes p50 | kbit/s | rate p50 kbit/s | estimate min-max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        low, high = r["estimate_kbps_min_max"]
        print(f"| {r['rule']} | {r['seconds']} | {r['rebuilds_per_min']:.1f} | {r['cpu_ms_median']:.2f} | "
              f"{r['cpu_ms_mean']:.2f} | {r.get('cpu_ms_rebuild_median', float('nan')):.2f} | "
              f"{r.get('bytes_rebuild_median', 0):.0f} | {r['bytes_median']:.0f} | {r['kbps']:.0f} | "
              f"{r['rate_kbps_median']:.0f} | {low:.0f}-{high:.0f} |")
    for r in rows:
        if "fell_20pct_after_s" in r:
            print(f"{r['rule']}: congestion at {r['rate_at_congestion_kbps']:.0f} kbit/s; estimate 20% "
                  f"lower after {r['first_estimate_below_80pct_after_s']} s, rate after "
                  f"{r['fell_20pct_after_s']} s; lowest {r['lowest_rate_after_kbps']:.0f} kbit/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time, after connecting")
    parser.add_argument("--congest-at", type=float, default=None, help="start the delay ramp at this second")
    parser.add_argument("--ramp-ms-per-s", type=float, default=200.0, help="added delay growth (ms/s)")
    parser.add_argument("--ramp-s", type=float, default=3.0, help="how long the delay grows")
    parser.add_argument("--browser", action="store_true", help="headless Chromium pages, not aiortc clients")
    parser.add_argument("--after-first", action="store_true", help="the first session holds (swap)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rebuilds.json")
    args = parser.parse_args()
    congested_at = None if args.browser else asyncio.run(run(args))
    if args.browser:
        asyncio.run(run_browsers(args))
    rows = [summary(sender, congested_at) for sender in SENDERS if sender.frames]
    print_table(rows)
    trace = [per_second(sender) for sender in SENDERS if sender.frames]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                    "per_second": trace}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
