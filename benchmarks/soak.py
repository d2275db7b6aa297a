"""One long session against a real `lipstream serve`: memory, A/V drift, late frames, fps over time.

    python benchmarks/soak.py                  # 10 minutes, spawns the server on a free loopback port
    python benchmarks/soak.py --minutes 60     # an hour
    python benchmarks/soak.py --url http://127.0.0.1:8080 --pid PID   # a running server

A real aiortc client sends speech-like bursts and pauses, looped, at real-time pace, and counts
the video from RTP arrivals without decoding it (cheap). Every ~10 s it samples the server's
resident memory (/proc), the receiver's A/V offset over the window (`transport_offsets_timed`),
the server's rendered/skipped/late frame counters (/metrics) and the received fps. Prints a table
(start, every ~5 min, end) and the summary: RSS growth after warm-up, A/V drift (median offset of
the last window minus the first), late frames %. Writes JSON and a PNG plot to benchmarks/results/.
"""

import argparse
import asyncio
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np

from lipstream.bench import speechlike
from lipstream.measure.counting import skip_video_decoding
from lipstream.measure.output import write_json
from lipstream.measure.server import (
    Target,
    frame_counts,
    loopback_only,
    scrape,
    server_rss_mb,
    spawned_server,
)
from lipstream.measure.speech import SpeechTrack
from lipstream.streaming.client import Publisher, transport_offsets_timed

SPEECH_LOOP_S = 30.0  # bursts and pauses, repeated for the whole run
OFFSET_SKIP_S = 2.0  # media seconds of start-up left out of the A/V offsets
FRAME_RESULTS = ("rendered", "skipped", "late")


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the session connected
    rss_mb: float  # the server's and its workers' resident memory; nan when its pid is unknown
    av_offset_ms: float  # median over the window: video arrival minus its audio's; nan if none
    fps: float  # video frames received per second over the window
    rendered: float  # server counters since the session connected
    skipped: float
    late: float


@dataclass(frozen=True)
class Summary:
    minutes: float
    rss_growth_after_warmup_mb: float
    av_drift_ms: float
    late_frames_pct: float
    skipped_frames_pct: float
    mean_fps: float


def window_stats(publisher: Publisher, since: float, until: float) -> tuple[float, float]:
    """(median A/V offset in ms, received fps) for video that arrived in [since, until)."""
    received = publisher.received
    arrivals = np.fromiter(received.rtp_arrival["video"].values(), float)
    fps = float(((arrivals >= since) & (arrivals < until)).sum() / (until - since))
    if not received.rtp_arrival["audio"]:
        return math.nan, fps
    at, offsets = transport_offsets_timed(received, skip_s=OFFSET_SKIP_S)
    inside = offsets[(at >= since) & (at < until)]
    return (float(np.median(inside)) * 1000 if inside.size else math.nan), fps


async def take_sample(http: aiohttp.ClientSession, target: Target, publisher: Publisher,
                      start: float, window: tuple[float, float], base: dict[str, float]) -> Sample:
    counts = frame_counts(await scrape(http, target.url))
    offset_ms, fps = window_stats(publisher, *window)
    since_start = [counts.get(k, 0) - base.get(k, 0) for k in FRAME_RESULTS]
    return Sample(round(window[1] - start, 1), server_rss_mb(target.pid) if target.pid else math.nan,
                  offset_ms, fps, *since_start)


async def soak(target: Target, minutes: float, interval_s: float) -> list[Sample]:
    track = SpeechTrack(speechlike(SPEECH_LOOP_S), loop=True)
    publisher = Publisher(target.url, np.zeros(0, np.float32), track=track, keep_audio=False)
    samples: list[Sample] = []
    async with aiohttp.ClientSession() as http:
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 30)
        start = time.monotonic()
        base = frame_counts(await scrape(http, target.url))
        try:
            for k in range(1, math.ceil(minutes * 60 / interval_s) + 1):
                await asyncio.sleep(max(start + k * interval_s - time.monotonic(), 0))
                window = (start + (k - 1) * interval_s, time.monotonic())
                samples.append(await take_sample(http, target, publisher, start, window, base))
                print_progress(samples[-1])
        finally:
            await publisher.stop(http)
    return samples


def print_progress(s: Sample) -> None:
    print(f"  {s.t_s:7.0f} s  rss {s.rss_mb:7.1f} MB  A/V {s.av_offset_ms:6.1f} ms  {s.fps:5.2f} fps  "
          f"late {s.late:.0f}", flush=True)


def summarise(samples: list[Sample], minutes: float, warmup_s: float) -> Summary:
    after_warmup = [s for s in samples if s.t_s >= warmup_s] or samples[-1:]
    offsets = [s.av_offset_ms for s in samples if not math.isnan(s.av_offset_ms)]
    last = samples[-1]
    made = max(last.rendered + last.skipped, 1)
    return Summary(minutes, round(last.rss_mb - after_warmup[0].rss_mb, 1),
                   round(offsets[-1] - offsets[0], 1) if offsets else math.nan,
                   round(last.late / made * 100, 2), round(last.skipped / made * 100, 2),
                   round(float(np.mean([s.fps for s in samples])), 2))


def table_rows(samples: list[Sample], every_s: float) -> list[Sample]:
    """The first sample, the first at or after each `every_s` mark, and the last."""
    rows, mark = [samples[0]], every_s
    for s in samples[1:]:
        if s.t_s >= mark:
            rows.append(s)
            mark = (s.t_s // every_s + 1) * every_s
    return rows if rows[-1] is samples[-1] else [*rows, samples[-1]]


def print_table(samples: list[Sample], summary: Summary, every_s: float) -> None:
    print(f"{'t s':>6} {'RSS MB':>8} {'A/V ms':>7} {'fps':>6} {'rendered':>9} {'skipped':>8} {'late':>6}")
    for s in table_rows(samples, every_s):
        print(f"{s.t_s:>6.0f} {s.rss_mb:>8.1f} {s.av_offset_ms:>7.1f} {s.fps:>6.2f} {s.rendered:>9.0f} "
              f"{s.skipped:>8.0f} {s.late:>6.0f}")
    print(f"RSS growth after warm-up: {summary.rss_growth_after_warmup_mb:+.1f} MB; "
          f"A/V drift (last window - first): {summary.av_drift_ms:+.1f} ms; "
          f"late frames: {summary.late_frames_pct:.2f}%; skipped: {summary.skipped_frames_pct:.2f}%; "
          f"mean received fps: {summary.mean_fps:.2f}")


def plot(samples: list[Sample], path: Path) -> bool:
    """RSS, A/V offset and fps against time; False (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    t = [s.t_s / 60 for s in samples]
    series = [("server RSS, MB", [s.rss_mb for s in samples]),
              ("A/V offset at receiver, ms", [s.av_offset_ms for s in samples]),
              ("received fps", [s.fps for s in samples])]
    fig, axes = plt.subplots(len(series), 1, sharex=True, figsize=(8, 7))
    for ax, (label, values) in zip(axes, series, strict=True):
        ax.plot(t, values, marker=".")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--url", help="a running server (default: spawn one on a free loopback port)")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, to read its memory")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS growth counts")
    parser.add_argument("--table-every", type=float, default=300.0, help="seconds between table rows")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"),
                        help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    skip_video_decoding()
    loopback_only()
    if args.url:
        samples = asyncio.run(soak(Target(args.url, args.pid), args.minutes, args.interval))
    else:
        with spawned_server("--max-sessions", "1") as target:
            samples = asyncio.run(soak(target, args.minutes, args.interval))
    summary = summarise(samples, args.minutes, args.warmup)
    print_table(samples, summary, args.table_every)
    json_path, png_path = args.out.with_suffix(".json"), args.out.with_suffix(".png")
    write_json(json_path, {"summary": asdict(summary), "samples": [asdict(s) for s in samples]})
    print(f"wrote {json_path}" + (f" and {png_path}" if plot(samples, png_path) else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
