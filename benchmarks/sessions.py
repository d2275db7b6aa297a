"""N concurrent sessions against a real `lipstream serve` on loopback: fps, gaps, A/V offset, CPU.

    .venv/bin/python benchmarks/sessions.py --sessions 4 --seconds 20

Starts the server as a subprocess (its CPU time is read from /proc), connects N aiortc publishers
that send speech-like audio, and after a warm-up measures, per session: fps and the longest gap
between frames (from the arrival of each frame's first RTP packet), the audio-video offset (that
arrival minus the arrival of the audio with the same media time), and frames the server rendered,
skipped or sent late. The clients send real Opus speech as a browser does (20 ms packets), encoded
once before the run and replayed, and count the media they receive from RTP arrivals without
decoding it: on a 2-core machine, encoding and decoding N streams next to the server would take the
CPU the server is being measured on. --decode decodes the received video; --costly-clients makes
the clients of before (aiortc encodes their speech live and decodes the audio back), to compare.
Prints a table and writes JSON.
"""

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np

from lipstream.bench import speechlike
from lipstream.measure.counting import skip_audio_decoding, skip_video_decoding
from lipstream.measure.server import (
    frame_counts,
    loopback_only,
    machine_busy_s,
    server_cpu_s,
    spawned_server,
    stage_means_ms,
)
from lipstream.measure.speech import OpusReplayTrack
from lipstream.streaming.client import Publisher, fps_and_max_gap, transport_offsets_s

CONNECT_TIMEOUT_S = 30.0  # N sessions' ICE and DTLS on a busy 2-core machine


def speech_client(url: str, seconds: float, seed: int, costly: bool = False) -> Publisher:
    """A client sending `seconds` of speech-like audio: replayed Opus packets unless `costly`."""
    pcm = speechlike(seconds, seed=seed)
    if costly:
        return Publisher(url, pcm)
    return Publisher(url, pcm, track=OpusReplayTrack(pcm), keep_audio=False)


@contextlib.asynccontextmanager
async def live_clients(http: aiohttp.ClientSession, url: str, sessions: int, seconds: float,
                       warmup_s: float) -> AsyncIterator[list[Publisher]]:
    """`sessions` replaying clients, connected and past their warm-up; stopped when the block ends."""
    publishers = [speech_client(url, seconds + warmup_s + 10, seed=i) for i in range(sessions)]
    try:
        await asyncio.gather(*(p.start(http) for p in publishers))
        await asyncio.gather(*(asyncio.wait_for(p.connected.wait(), CONNECT_TIMEOUT_S) for p in publishers))
        await asyncio.sleep(warmup_s)
        yield publishers
    finally:
        await asyncio.gather(*(p.stop(http) for p in publishers), return_exceptions=True)


def count_only(video: bool = True, audio: bool = True) -> None:
    """The clients of this process count what they receive instead of decoding it."""
    if video:
        skip_video_decoding()
    if audio:
        skip_audio_decoding()


def per_session(publisher: Publisher, since: float) -> dict[str, float]:
    got = publisher.received
    arrivals = sorted(t for t in got.rtp_arrival["video"].values() if t >= since)
    fps, max_gap_s = fps_and_max_gap(arrivals)
    offsets_ms = transport_offsets_s(got, skip_s=2.0) * 1000
    return {"fps": fps, "max_gap_ms": max_gap_s * 1000, "frames": len(arrivals),
            "av_offset_median_ms": float(np.median(offsets_ms)),
            "av_offset_p5_ms": float(np.percentile(offsets_ms, 5)),
            "av_offset_p95_ms": float(np.percentile(offsets_ms, 95))}


async def measure(url: str, server_pid: int, sessions: int, seconds: float, warmup_s: float,
                  costly: bool = False) -> dict:
    async with aiohttp.ClientSession() as http:
        publishers = [speech_client(url, seconds + warmup_s + 5, i, costly) for i in range(sessions)]
        for client in publishers:
            await client.start(http)
        await asyncio.gather(*(asyncio.wait_for(p.connected.wait(), 20) for p in publishers))
        await asyncio.sleep(warmup_s)
        async with http.get(f"{url}/metrics") as response:
            before_text = await response.text()
        before = frame_counts(before_text)
        since, cpu_before, client_before = time.monotonic(), server_cpu_s(server_pid), time.process_time()
        machine_before = machine_busy_s()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - since
        server_cpu = (server_cpu_s(server_pid) - cpu_before) / wall  # workers included
        client_cpu = (time.process_time() - client_before) / wall
        others_cpu = (machine_busy_s() - machine_before) / wall - server_cpu - client_cpu
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        after = frame_counts(text)
        stages = stage_means_ms(before_text, text)
        rows = [per_session(p, since) for p in publishers]
        for client in publishers:
            await client.stop(http)
    frames = {k: after.get(k, 0) - before.get(k, 0) for k in ("rendered", "skipped", "late")}
    return {"sessions": sessions, "seconds": seconds, "cores": os.cpu_count(), "per_session": rows,
            "server_cpu_cores": server_cpu, "server_cpu_per_session": server_cpu / sessions,
            "client_cpu_cores": client_cpu, "other_programs_cpu_cores": max(others_cpu, 0.0),
            "server_frames": frames, "server_stage_mean_ms": stages,
            "clients": "costly" if costly else "replay"}


def print_table(result: dict) -> None:
    print(f"{result['sessions']} sessions, {result['seconds']:.0f} s, {result['cores']} cores")
    print(f"{'session':>7} {'fps':>6} {'max gap ms':>10} {'A/V median ms':>13} {'A/V p5..p95 ms':>15}")
    for i, row in enumerate(result["per_session"]):
        print(f"{i:>7} {row['fps']:>6.2f} {row['max_gap_ms']:>10.0f} {row['av_offset_median_ms']:>13.1f} "
              f"{row['av_offset_p5_ms']:>7.1f}..{row['av_offset_p95_ms']:<6.1f}")
    frames = result["server_frames"]
    total = max(sum(frames.values()) - frames["late"], 1)
    print(f"server CPU: {result['server_cpu_cores'] * 100:.0f}% of one core in all, "
          f"{result['server_cpu_per_session'] * 100:.0f}% per session; "
          f"clients (this process): {result['client_cpu_cores'] * 100:.0f}%; "
          f"other programs: {result['other_programs_cpu_cores'] * 100:.0f}%")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result["server_stage_mean_ms"].items())
    print(f"server stage means, ms: {stages}")
    print(f"server frames: {frames['rendered']:.0f} rendered, {frames['skipped']:.0f} skipped "
          f"({frames['skipped'] / total * 100:.1f}%), {frames['late']:.0f} sent late")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--decode", action="store_true", help="decode the received video in the clients")
    parser.add_argument("--costly-clients", action="store_true",
                        help="clients that encode their speech live and decode the audio back (as before)")
    parser.add_argument("--out", default="benchmarks/results/sessions.json")
    args = parser.parse_args()
    count_only(video=not args.decode, audio=not args.costly_clients)
    loopback_only()  # the clients gather 127.0.0.1, the server (bound to it) adds 127.0.0.1 too
    with spawned_server("--max-sessions", str(args.sessions)) as target:
        assert target.pid is not None
        result = asyncio.run(measure(target.url, target.pid, args.sessions, args.seconds, args.warmup,
                                     args.costly_clients))
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
