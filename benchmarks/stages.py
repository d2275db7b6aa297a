"""Per-stage engine cost per frame (ms, p50 / p99) at 256 and 512 px, one thread.

Wall time (p50, p99) and this thread's CPU time (cpu p50, cpu p99: what the work costs one core
when other processes share the machine). Render stages are timed one after another inside each
frame (head, rig, field, warp, composite, blink); the audio side (mel + motion model +
smoothing) is timed through the Engine with rendering skipped, for the baseline and, when
shipped, the ONNX model. Then the shipped model alone at batch 1, 8 and 32 windows per runner
call (what `EngineGroup` runs each tick): CPU cost per window. Burn-in, then measure.
With --session, instead: the compute a server spends per session-frame outside the network code,
stage by stage on one thread (engine on speech-like audio, RGB -> I420, wrapping the picture for
aiortc, VP8 encode + packetise, Opus encode of the frame's two 20 ms chunks).

    python benchmarks/stages.py [--frames 500] [--cv-threads 1] [--model-calls 300] [--only-model]
                                [--session] [--models NAME=PATH ...] [--out benchmarks/results/stages.json]

--cv-threads sets OpenCV's thread count (1: what a server of many sessions wants; the CPU time of
OpenCV's helper threads is then counted nowhere here, so compare thread counts by p50 wall time
on an idle machine, or by the process CPU figure printed last).
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from fractions import Fraction  # noqa: E402

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lipstream.engine.avatar import Avatar, AvatarConfig  # noqa: E402
from lipstream.engine.constants import (  # noqa: E402
    N_MELS,
    SAMPLE_RATE,
    SAMPLES_PER_VIDEO_FRAME,
    VIDEO_CLOCK_RATE,
    VIDEO_PTS_PER_FRAME,
)
from lipstream.engine.engine import Engine, EngineConfig  # noqa: E402
from lipstream.engine.motion import load_motion_model, shipped_model_path  # noqa: E402
from lipstream.engine.render import RenderConfig, Renderer  # noqa: E402
from lipstream.streaming.clock import CHUNKS_PER_FRAME  # noqa: E402

MODEL_BATCHES = (1, 8, 32)  # windows per runner call: one session, a tick of a small and a busy server
RENDER_STAGES = ("head", "rig", "field", "warp", "composite", "blink")
BURN_IN = 50
COMPARE_ROUNDS = 6  # --models: each model timed in this many turns, interleaved with the others
SESSION_STAGES = ("engine", "RGB -> I420", "wrap for aiortc", "VP8 encode + packetise", "Opus encode")


def speech_like_controls(frames: int, seed: int = 0) -> np.ndarray:
    """Smoothly varying controls that open and close like speech, with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 25.0
    jaw = np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, 1)
    jaw *= (np.sin(2 * np.pi * 0.3 * t) > -0.5)  # pauses: mouth at rest
    other = np.clip(rng.normal(0.2, 0.25, size=(frames, 4)), 0, 1)
    return np.column_stack([jaw, other]).astype(np.float32)


def _now() -> tuple[float, float]:
    """(wall, this thread's CPU) seconds: CPU time leaves out time lost to other processes."""
    return time.perf_counter(), time.thread_time()


def time_render(size: int, frames: int) -> dict[str, list[tuple[float, float]]]:
    avatar = Avatar.default(AvatarConfig(size=size))
    renderer = Renderer(avatar, RenderConfig(), seed=0)
    controls = speech_like_controls(frames + BURN_IN)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in (*RENDER_STAGES, "render total")}
    for index, c in enumerate(controls):
        marks = [_now()]
        frame, head = renderer.background(index)
        marks.append(_now())
        pose = renderer.pose(c)
        marks.append(_now())
        field = renderer.field(pose, head)
        marks.append(_now())
        renderer.warp(field.coords, frame)
        marks.append(_now())
        renderer.composite(pose, field, frame)
        marks.append(_now())
        renderer.blink(index, frame, head)
        marks.append(_now())
        if index < BURN_IN:
            continue
        for name, a, b in zip(RENDER_STAGES, marks[:-1], marks[1:], strict=True):
            times[name].append(((b[0] - a[0]) * 1e3, (b[1] - a[1]) * 1e3))
        times["render total"].append(((marks[-1][0] - marks[0][0]) * 1e3, (marks[-1][1] - marks[0][1]) * 1e3))
    return times


def time_audio_side(motion: str | None, frames: int) -> list[tuple[float, float]]:
    """push 40 ms of audio + pop its frame unrendered: mel + motion model + smoothing, via the Engine."""
    engine = Engine(Avatar.default(), EngineConfig(motion=motion))
    rng = np.random.default_rng(0)
    seconds = (frames + BURN_IN + 10) / 25.0
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
              + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    out = []
    chunk = SAMPLE_RATE // 25  # one frame of audio per push, as a live session feeds it
    for i in range(speech.size // chunk):
        start = _now()
        engine.push_audio(speech[i * chunk : (i + 1) * chunk], SAMPLE_RATE)
        popped = [engine.pop_frame(render=False) for _ in range(engine.ready())]
        end = _now()
        elapsed = ((end[0] - start[0]) * 1e3, (end[1] - start[1]) * 1e3)
        if i >= BURN_IN and len(popped) == 1:
            out.append(elapsed)
        if len(out) >= frames:
            break
    return out


def time_model_batches(calls: int, spec: str | None = None,
                       batches: tuple[int, ...] = MODEL_BATCHES) -> dict[str, dict[str, float]]:
    """A model alone (default: the shipped one), one runner call per batch of B windows (EngineGroup's)."""
    model = load_motion_model(spec)
    shape = (model.context_frames + model.lookahead_frames, N_MELS)
    rng = np.random.default_rng(0)
    results = {}
    for batch in batches:
        windows = rng.normal(-3.0, 1.0, (batch, *shape)).astype(np.float32)  # log10 mel power
        samples = []
        for i in range(BURN_IN + calls):
            start = _now()
            model.predict_batch(windows)
            end = _now()
            if i >= BURN_IN:
                samples.append(((end[0] - start[0]) * 1e3, (end[1] - start[1]) * 1e3))
        row = summary(samples)
        row["cpu_p50_ms_per_window"] = row["cpu_p50_ms"] / batch
        row["windows_per_cpu_s"] = 1000 / row["cpu_p50_ms_per_window"]
        results[str(batch)] = row
    return results


def print_model_batches(rows: dict[str, dict[str, float]]) -> None:
    single = rows["1"]["cpu_p50_ms_per_window"]
    print("\nmotion model alone, onnxruntime CPU, one thread: one call per batch")
    print(f"{'batch':>6}{'p50 ms':>9}{'cpu p50':>9}{'cpu ms/window':>15}{'windows/cpu s':>15}"
          f"{'vs batch 1':>11}")
    for batch, r in rows.items():
        print(f"{batch:>6}{r['p50_ms']:>9.3f}{r['cpu_p50_ms']:>9.3f}{r['cpu_p50_ms_per_window']:>15.4f}"
              f"{r['windows_per_cpu_s']:>15.0f}{single / r['cpu_p50_ms_per_window']:>10.1f}x")


def compare_models(specs: dict[str, str | None], calls: int) -> dict[str, float]:
    """CPU ms per window at batch 1, the models taking turns COMPARE_ROUNDS times, so that load from
    other processes falls on all alike; the median round of each."""
    rounds: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(COMPARE_ROUNDS):
        for name, spec in specs.items():
            row = time_model_batches(max(calls // COMPARE_ROUNDS, 1), spec, (1,))["1"]
            rounds[name].append(row["cpu_p50_ms"])
    return {name: float(np.median(values)) for name, values in rounds.items()}


def print_comparison(cpu_ms: dict[str, float]) -> None:
    print("\nmodels alone, onnxruntime CPU, one thread, batch 1, taking turns")
    print(f"{'model':<24}{'cpu ms/frame':>14}{'x shipped':>11}")
    for name, ms in cpu_ms.items():
        print(f"{name:<24}{ms:>14.3f}{ms / cpu_ms['shipped']:>11.2f}")


def time_session(frames: int) -> dict[str, float]:
    """Thread CPU ms per session-frame of each stage of a served session, averaged over frames
    (an idle frame's skipped render and conversion count as zero, as they cost nothing)."""
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from lipstream.bench import speechlike
    from lipstream.streaming.codecs import tune_vp8
    from lipstream.streaming.tracks import OpusChunkEncoder

    tune_vp8()
    vp8 = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    opus, engine = OpusChunkEncoder(), Engine(Avatar.default())
    audio = speechlike((frames + BURN_IN) / 25.0, seed=2)
    engine.push_audio(np.zeros(engine.latency_samples - SAMPLES_PER_VIDEO_FRAME, np.float32), SAMPLE_RATE)
    totals = dict.fromkeys(SESSION_STAGES, 0.0)
    for n in range(frames + BURN_IN):
        marks = [time.thread_time()]
        engine.push_audio(audio[n * SAMPLES_PER_VIDEO_FRAME : (n + 1) * SAMPLES_PER_VIDEO_FRAME], SAMPLE_RATE)
        frame = engine.pop_frame()
        assert frame is not None
        marks.append(time.thread_time())
        yuv = frame.yuv  # as the producer reads it: converted once per picture, here on first use
        marks.append(time.thread_time())
        video = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")  # as the track wraps it
        video.pts, video.time_base = n * VIDEO_PTS_PER_FRAME, Fraction(1, VIDEO_CLOCK_RATE)
        marks.append(time.thread_time())
        vp8.encode(video)
        marks.append(time.thread_time())
        for k, chunk in enumerate(np.split(frame.audio, CHUNKS_PER_FRAME)):
            opus(chunk, (n * CHUNKS_PER_FRAME + k) * chunk.size)  # as the audio track encodes it
        marks.append(time.thread_time())
        if n >= BURN_IN:
            for name, a, b in zip(SESSION_STAGES, marks[:-1], marks[1:], strict=True):
                totals[name] += (b - a) * 1e3 / frames
    return totals


def print_session(stages: dict[str, float]) -> None:
    total = sum(stages.values())
    print("\nper session-frame, 512 px, one thread (thread CPU ms, mean over frames)")
    for name, ms in [*stages.items(), ("total", total)]:
        print(f"{name:<28}{ms:>8.2f}{ms / total:>8.0%}")


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    wall, cpu = np.array(samples).T
    return {"p50_ms": float(np.percentile(wall, 50)), "p99_ms": float(np.percentile(wall, 99)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "cpu_p99_ms": float(np.percentile(cpu, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--cv-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stages.json"))
    parser.add_argument("--model-calls", type=int, default=300, help="calls per batch size, model alone")
    parser.add_argument("--only-model", action="store_true", help="only the model at batch 1/8/32")
    parser.add_argument("--session", action="store_true", help="only the per-session-frame stages")
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME=PATH",
                        help="only these .onnx files and the shipped model alone, at batch 1, taking turns")
    args = parser.parse_args()
    cv2.setNumThreads(args.cv_threads)
    if args.models:
        if not all("=" in m for m in args.models):
            raise SystemExit(f"--models takes name=path.onnx, got {args.models}")
        specs: dict[str, str | None] = {"shipped": None, **dict(m.split("=", 1) for m in args.models)}
        cpu_ms = compare_models(specs, args.model_calls)
        print_comparison(cpu_ms)
        args.out.write_text(json.dumps({"threads": 1, "cpu_ms_per_frame": cpu_ms}, indent=2))
        return
    if args.session:
        session = time_session(args.frames)
        print_session(session)
        args.out.write_text(json.dumps({"frames": args.frames, "session_ms_per_frame": session}, indent=2))
        return
    models = {"baseline": "baseline"}
    if shipped_model_path() is not None:
        models["onnx"] = None
    results: dict[str, dict[str, dict[str, float]]] = {}
    batches = time_model_batches(args.model_calls) if shipped_model_path() is not None else {}
    for size in (() if args.only_model else (256, 512)):
        render = {name: summary(v) for name, v in time_render(size, args.frames).items()}
        for label, spec in models.items():
            audio = summary(time_audio_side(spec, args.frames))
            render[f"mel+model+smooth ({label})"] = audio
        results[str(size)] = render
    for size, rows in results.items():
        for label in models:
            audio = rows[f"mel+model+smooth ({label})"]
            rows[f"engine total ({label})"] = {
                k: rows["render total"][k] + audio[k] for k in audio  # p99: an upper bound
            }
        print(f"\n{size}x{size}, one thread, {args.frames} frames")
        print(f"{'stage':<32}{'p50 ms':>9}{'p99 ms':>9}{'cpu p50':>9}{'cpu p99':>9}")
        for name, s in rows.items():
            figures = "".join(f"{s[k]:>9.3f}" for k in ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms"))
            print(f"{name:<32}{figures}")
    if batches:
        print_model_batches(batches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"frames": args.frames, "threads": 1, "cv_threads": args.cv_threads,
                                    "sizes": results, "model_batches": batches}, indent=2))
    print(f"\nprocess CPU (all threads, whole run): {time.process_time():.1f} s")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
