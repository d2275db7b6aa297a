"""The GPU path measured on the GPU it runs on: per-stage device time, sessions per GPU by batch
size, video encode throughput. Prints one table per part and writes JSON.

On a machine without a usable NVIDIA GPU it says so, prints what it would measure, writes that to
the JSON and exits 0 (CI runs it that way). `benchmarks/gpu_check.sh` runs it on a GPU machine.

    python benchmarks/gpu.py [--frames 300] [--out benchmarks/results/gpu.json]

Timing: each stage's call returns only after its results are back on the host (the kernels and the
TensorRT runner synchronise their stream), so wall time around a call is device time plus launch and
copy overhead: what a session pays. Burn-in, then measure; p50 and p99 in ms.
"""

import argparse
import functools
import itertools
import json
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.constants import N_MELS, VIDEO_FPS
from lipstream.errors import LipstreamError
from lipstream.streaming.codecs import TUNING as VP8_TUNING
from lipstream.streaming.codecs import VP8_DEFAULT_BITRATE, H264Tuning

FRAME_PERIOD_MS = 1000 / VIDEO_FPS  # 40 ms: every session's budget per frame
BATCHES = (1, 8, 32, 64)  # windows per model call; 64 is the TensorRT profile's maximum
SIZE_PX = 512
BURN_IN = 20
ENCODERS = ("h264_nvenc", "libx264", "libvpx")  # GPU H.264, CPU H.264, CPU VP8 (aiortc's default)
ENCODER_OPTIONS = {  # the server's senders' own settings (streaming/codecs.py), at VP8's start rate
    "h264_nvenc": H264Tuning(encoder="h264_nvenc").options(VP8_DEFAULT_BITRATE),
    "libx264": H264Tuning().options(VP8_DEFAULT_BITRATE),
    "libvpx": {"deadline": "realtime", "lag-in-frames": "0", **VP8_TUNING.options()},
}
ENCODE_CLIP_FRAMES = 50  # two seconds of talking, cycled
WOULD_MEASURE = (
    "model: TensorRT (or onnxruntime CUDA) ms per call at batch " + "/".join(map(str, BATCHES)),
    "render stages on device 'cuda' at 512 px: head, rig, field, warp, composite, blink",
    "the whole frame on the device (DeviceRenderer), each stage's device time from CUDA events:"
    " head, rig, field + warp, interior, blink, i420, copy down",
    "sessions per GPU by batch size: 40 ms / (model ms per window + render ms per frame)",
    f"encode: 512 px frames per second through {', '.join(ENCODERS)} (PyAV), and NVENC sessions",
)


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    times = []
    for i in range(BURN_IN + repeats):
        start = time.perf_counter()
        call()
        if i >= BURN_IN:
            times.append((time.perf_counter() - start) * 1e3)
    ms = np.array(times)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def measure_model(repeats: int) -> dict[str, Any]:
    from lipstream.engine.device import resolve_device
    from lipstream.engine.motion import load_motion_model

    runner = resolve_device("cuda").runner
    model = load_motion_model(None, backend=runner)
    shape = (model.context_frames + model.lookahead_frames, N_MELS)
    rows = {}
    for batch in BATCHES:
        windows = np.random.default_rng(batch).normal(-3, 1, (batch, *shape)).astype(np.float32)
        row = timed(functools.partial(model.predict_batch, windows), repeats)
        row["ms_per_window"] = row["p50_ms"] / batch
        rows[str(batch)] = row
    return {"runner": runner, "batches": rows}


def measure_render(frames: int) -> dict[str, dict[str, float]]:
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.render import RenderConfig, Renderer

    renderer = Renderer(Avatar.default(AvatarConfig(size=SIZE_PX)), RenderConfig(device="cuda"))
    jaw = 0.5 + 0.5 * np.sin(np.arange(BURN_IN + frames) * 0.7)
    stage_ms: dict[str, list[float]] = {s: [] for s in ("head", "rig", "field", "warp", "composite", "blink")}
    for i, j in enumerate(jaw):
        controls = np.array([j, 0.3, 0.2, 0.0, 0.1], np.float32)
        marks = [time.perf_counter()]
        frame, head = renderer.background(i)
        marks.append(time.perf_counter())
        pose = renderer.pose(controls)
        marks.append(time.perf_counter())
        field = renderer.field(pose, head)
        marks.append(time.perf_counter())
        renderer.warp(field.coords, frame)
        marks.append(time.perf_counter())
        renderer.composite(pose, field, frame)
        marks.append(time.perf_counter())
        renderer.blink(i, frame, head)
        marks.append(time.perf_counter())
        if i >= BURN_IN:
            for name, a, b in zip(stage_ms, marks, marks[1:], strict=False):
                stage_ms[name].append((b - a) * 1e3)
    rows = {name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))}
            for name, v in stage_ms.items()}
    rows["total"] = {k: sum(r[k] for r in rows.values()) for k in ("p50_ms", "p99_ms")}
    return rows


def measure_device_render(frames: int) -> dict[str, dict[str, float]]:
    """Device time per stage of DeviceRenderer's frame (CUDA events between the stages)."""
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.kernels.device_render import DeviceRenderer

    renderer = DeviceRenderer(Avatar.default(AvatarConfig(size=SIZE_PX)))
    jaw = 0.5 + 0.5 * np.sin(np.arange(BURN_IN + frames) * 0.7)
    stage_ms: dict[str, list[float]] = {}
    for i, j in enumerate(jaw):
        times = renderer.stage_times_ms(np.array([j, 0.3, 0.2, 0.0, 0.1], np.float32), i)
        for name, ms in times.items():
            if i >= BURN_IN:
                stage_ms.setdefault(name, []).append(ms)
    renderer.close()
    rows = {name: {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99))}
            for name, v in stage_ms.items()}
    rows["total"] = {k: sum(r[k] for r in rows.values()) for k in ("p50_ms", "p99_ms")}
    return rows


def talking_frames(count: int) -> list[Any]:
    """Real frames of the default avatar talking (rendered on the CPU), as yuv420p VideoFrames:
    an encoder's cost depends on how much changes between frames."""
    import av

    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.render import Renderer

    renderer = Renderer(Avatar.default(AvatarConfig(size=SIZE_PX)))
    jaw = 0.5 + 0.5 * np.sin(np.arange(count) * 0.7)
    return [av.VideoFrame.from_ndarray(renderer.render(np.array([j, 0.3, 0.2, 0.0, 0.1], np.float32), i),
                                       format="rgb24").reformat(format="yuv420p") for i, j in enumerate(jaw)]


def open_encoder(name: str) -> Any:
    import av

    codec: Any = av.CodecContext.create(name, "w")  # a video encoder context
    codec.width = codec.height = SIZE_PX
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, VIDEO_FPS)
    codec.bit_rate = VP8_DEFAULT_BITRATE
    codec.options = ENCODER_OPTIONS.get(name, {})
    codec.thread_count = 1  # per-core figures: a server runs one encoder per session and core share
    codec.open()
    return codec


def encode_cycle(codec: Any, clip: list[Any]) -> Callable[[], Any]:
    """One call encodes the clip's next frame, round and round."""
    frames = itertools.cycle(clip)
    return lambda: codec.encode(next(frames))


def measure_encode(frames: int) -> dict[str, dict[str, Any]]:
    clip = talking_frames(ENCODE_CLIP_FRAMES)
    rows: dict[str, dict[str, Any]] = {}
    for name in ENCODERS:
        try:
            codec = open_encoder(name)
        except Exception as err:  # PyAV raises per-codec errors: "not found", "no device"
            rows[name] = {"available": False, "why": str(err).splitlines()[0]}
            continue
        row = timed(encode_cycle(codec, clip), frames)
        rows[name] = {"available": True, **row, "fps": 1000 / row["p50_ms"],
                      "sessions_at_25fps": int(1000 / row["p50_ms"] / VIDEO_FPS)}
    return rows


def sessions_per_gpu(model: dict[str, Any], render: dict[str, dict[str, float]]) -> dict[str, int]:
    """Sessions one GPU stream carries per batch size: per frame, each session pays its share of
    the batched model call plus its own render (the whole frame on the device), inside the 40 ms
    period (one stream, no overlap: a floor; streams per session overlap copies and kernels)."""
    render_ms = render["total"]["p50_ms"]
    return {batch: int(FRAME_PERIOD_MS / (row["ms_per_window"] + render_ms))
            for batch, row in model["batches"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = parser.parse_args()
    from lipstream.engine.device import find_gpu

    try:
        gpu = find_gpu()
    except LipstreamError as err:
        return report_no_gpu(str(err), args.out, args.frames)
    results: dict[str, Any] = {"gpu": gpu, "model": measure_model(args.frames),
                               "render": measure_render(args.frames),
                               "device_render": measure_device_render(args.frames),
                               "encode": measure_encode(args.frames)}
    results["sessions_per_gpu_by_batch"] = sessions_per_gpu(results["model"], results["device_render"])
    print_results(results)
    write(results, args.out)
    return 0


def report_no_gpu(reason: str, out: Path, frames: int) -> int:
    print(f"benchmarks/gpu.py: no usable NVIDIA GPU on this machine ({reason}).")
    print("On a GPU it measures:")
    for line in WOULD_MEASURE:
        print(f"  - {line}")
    print("\nHere it measures the CPU encoders only (one thread each):")
    encode = measure_encode(frames)
    print_encode(encode)
    write({"gpu": None, "reason": reason, "would_measure": list(WOULD_MEASURE), "encode": encode}, out)
    return 0


def print_results(r: dict[str, Any]) -> None:
    print(f"GPU: {r['gpu']}; model runner: {r['model']['runner']}")
    print(f"\n{'batch':>6}{'p50 ms':>9}{'p99 ms':>9}{'ms/window':>11}{'sessions/GPU':>14}")
    for batch, row in r["model"]["batches"].items():
        print(f"{batch:>6}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['ms_per_window']:>11.4f}"
              f"{r['sessions_per_gpu_by_batch'][batch]:>14}")
    for title, rows in (("render stage (cuda kernels)", r["render"]),
                        ("device render stage", r["device_render"])):
        print(f"\n{title:<28}{'p50 ms':>9}{'p99 ms':>9}")
        for name, row in rows.items():
            print(f"{name:<28}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}")
    print_encode(r["encode"])


def print_encode(rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'encoder':<12}{'p50 ms':>9}{'p99 ms':>9}{'fps':>9}{'sessions':>10}")
    for name, row in rows.items():
        if row["available"]:
            print(f"{name:<12}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['fps']:>9.0f}"
                  f"{row['sessions_at_25fps']:>10}")
        else:
            print(f"{name:<12}  not available: {row['why']}")


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    raise SystemExit(main())
