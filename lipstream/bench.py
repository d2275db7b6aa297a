"""`lipstream bench`: how fast the engine makes frames on this machine, one thread.

Times whole `Engine.pop_frame` calls (mel, motion model, smoothing, rig, warp, composite; no
video encoding) over speech-like audio, after a burn-in. benchmarks/stages.py breaks the same
work down per stage.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lipstream.engine.audio import speechlike
from lipstream.engine.config import EngineConfig
from lipstream.engine.constants import SAMPLE_RATE, VIDEO_FPS, size_problem
from lipstream.engine.device import add_device_argument, choose_device
from lipstream.errors import LipstreamError
from lipstream.streaming.files import check_writable

__all__ = ["speechlike", "time_engine"]  # speechlike: the benchmarks take it from here

SPAWN = "spawn"  # `--latency` without a URL
DEFAULT_LATENCY_OUT = Path("lipstream-latency.json")  # and .png beside it
DEFAULT_BROWSER_LATENCY_OUT = Path("lipstream-latency-chromium.json")
BURN_IN_FRAMES = 25  # the first second: caches and the allocator warm up, not measured
MIN_MEASURED_FRAMES = 25
MIN_SECONDS = (BURN_IN_FRAMES + MIN_MEASURED_FRAMES) / VIDEO_FPS  # 2 s: ~24 measured, the lookahead held back
MAX_SECONDS = 600.0  # the engine holds the audio it was pushed: 38 MB at 16 kHz


@dataclass(frozen=True)
class EngineTiming:
    size: int
    motion: str
    frames: int
    p50_ms: float
    p99_ms: float
    realtime_factor: float  # frame period / p50 compute: how many sessions one core could run


def time_engine(size: int, motion: str | None, seconds: float = 12.0, burn_in: int = BURN_IN_FRAMES,
                device: str = EngineConfig.device) -> EngineTiming:
    import cv2

    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.engine import Engine

    cv2.setNumThreads(1)
    engine = Engine(Avatar.default(AvatarConfig(size=size)), EngineConfig(motion=motion, device=device))
    engine.push_audio(speechlike(seconds), SAMPLE_RATE)
    times = []
    while engine.ready():
        start = time.perf_counter()
        engine.pop_frame()
        times.append((time.perf_counter() - start) * 1000)
    ms = np.array(times[burn_in:])
    p50 = float(np.percentile(ms, 50))
    return EngineTiming(size, engine.model.name, ms.size, round(p50, 3),
                        round(float(np.percentile(ms, 99)), 3), round(1000 / VIDEO_FPS / p50, 1))


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--motion", nargs="+", default=["baseline", "shipped"],
                        help="'baseline', 'shipped' (the packaged model) or .onnx paths")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help=f"audio per measurement, {MIN_SECONDS:g} to {MAX_SECONDS:g} s (default 12)")
    parser.add_argument("--json", type=Path, help="also write the results here (--latency: a .png beside)")
    add_device_argument(parser)
    add_latency_arguments(parser)


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    latency = parser.add_argument_group("latency of a live server (instead of engine speed)")
    latency.add_argument("--latency", metavar="URL", nargs="?", const=SPAWN,
                         help="measure speech onset -> mouth opens, and POST -> first frame, of the "
                              "lipstream serve at URL (no URL: spawn one, as --spawn)")
    latency.add_argument("--spawn", action="store_true",
                         help="measure latency against a lipstream serve started on a free loopback port")
    latency.add_argument("--onsets", type=int, help="speech bursts to send (default: LatencyConfig's)")
    latency.add_argument("--token", help="the token the server at URL asks for (printed by lipstream serve)")
    latency.add_argument("--browser", action="store_true",
                         help="measure what headless Chromium presents (the viewer page with and without "
                              "its playout-delay hint) instead of an aiortc client; writes JSON only")


def run_bench(args: argparse.Namespace) -> int:
    if args.latency or args.spawn:
        return run_latency_bench(args)
    from lipstream.engine.motion import shipped_model_path

    choose_device(args.device)  # --device cuda without a GPU fails here, before any measuring
    check_measurable(args.sizes, args.seconds)
    if args.json:
        check_writable(args.json)  # not after minutes of measuring
    specs = [m for m in args.motion if m != "shipped" or shipped_model_path() is not None]
    rows = [time_engine(size, None if m == "shipped" else m, args.seconds, device=args.device)
            for size in args.sizes for m in specs]
    print(f"{'size':>5} {'motion':>12} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8} {'x real time':>12}")
    for r in rows:
        print(f"{r.size:>5} {r.motion:>12} {r.frames:>7} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.realtime_factor:>12.1f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def check_measurable(sizes: list[int], seconds: float) -> None:
    for size in sizes:
        if (problem := size_problem(size)) is not None:
            raise LipstreamError(problem)
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:  # NaN too
        raise LipstreamError(f"--seconds {seconds}: measure at least {MIN_SECONDS:g} s (the first "
                             f"{BURN_IN_FRAMES} frames are a warm-up) and at most {MAX_SECONDS:g} s")


def run_latency_bench(args: argparse.Namespace) -> int:
    from lipstream.measure.latency import LatencyConfig  # aiortc and aiohttp: only for this mode
    from lipstream.measure.report import run_latency
    from lipstream.measure.server import base_url

    url = None if args.spawn or args.latency == SPAWN else base_url(args.latency)
    if args.browser:
        return run_browser_latency_bench(args, url)
    config = LatencyConfig() if args.onsets is None else LatencyConfig(onsets=args.onsets)
    run_latency(url, config, args.json or DEFAULT_LATENCY_OUT, args.token)
    return 0


def run_browser_latency_bench(args: argparse.Namespace, url: str | None) -> int:
    from lipstream.measure.browser_latency import BrowserConfig  # playwright: only for this mode
    from lipstream.measure.browser_report import run_browser_latency

    config = BrowserConfig()
    if args.onsets is not None:
        config = BrowserConfig(replace(config.latency, onsets=args.onsets))
    run_browser_latency(url, config, args.json or DEFAULT_BROWSER_LATENCY_OUT, args.token)
    return 0
