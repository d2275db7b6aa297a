"""H.264 against VP8 for the server's video senders: CPU per frame, bitrate and picture, A/B.

The same frames as `benchmarks/vp8.py` (a talking face, and a photo panning a pixel a frame),
converted to I420 once, then encoded through aiortc's sender code path (encode + RTP packetisation)
by: lipstream's VP8 (shipped tuning), aiortc's own H.264 (x264 "medium", 1 Mbit/s start) and
lipstream's H.264 at several x264 presets (VP8's rates, constant rate, one thread). Per setting: the
process's CPU ms per frame (p50, mean; all threads: aiortc's own x264 runs several), kbit/s, and the
PSNR of the decoded frames against the sent ones.
NVENC is not measured here (no GPU): see docs/gpu.md.

    python benchmarks/codecs.py [--frames 300] [--size 512] [--out benchmarks/results/codecs.json]
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from aiortc.codecs.base import Encoder  # noqa: E402
from aiortc.codecs.h264 import H264Encoder, h264_depayload  # noqa: E402
from aiortc.codecs.vpx import vp8_depayload  # noqa: E402
from vp8 import BURN_IN, VIDEO_CLOCK_HZ, VIDEO_FPS, panning_frames, talking_frames  # noqa: E402

from lipstream.streaming.codecs import H264_TUNING, H264Tuning, TunedH264Encoder, TunedVp8Encoder  # noqa: E402


def tuned_h264(preset: str) -> Callable[[], Encoder]:
    def make() -> Encoder:
        encoder = TunedH264Encoder()
        encoder.tuning = H264Tuning(x264_preset=preset)
        return encoder

    return make


# label -> (encoder factory, FFmpeg decoder, RTP depayloader)
CANDIDATES: dict[str, tuple[Callable[[], Encoder], str, Callable[[bytes], bytes]]] = {
    "VP8 lipstream": (TunedVp8Encoder, "vp8", vp8_depayload),
    "H.264 aiortc": (H264Encoder, "h264", h264_depayload),
    **{f"H.264 {preset}": (tuned_h264(preset), "h264", h264_depayload)
       for preset in ("ultrafast", "superfast", "veryfast", "faster")},
}


def run(make: Callable[[], Encoder], decoder_name: str, depayload: Callable[[bytes], bytes],
        images: list[np.ndarray]) -> dict[str, float]:
    encoder, decoder = make(), av.CodecContext.create(decoder_name, "r")
    cpu_ms, sizes, psnrs = [], [], []
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index * VIDEO_CLOCK_HZ // VIDEO_FPS, Fraction(1, VIDEO_CLOCK_HZ)
        start = time.process_time()
        payloads, _ = encoder.encode(frame)
        cpu_ms.append((time.process_time() - start) * 1e3)
        data = b"".join(depayload(p) for p in payloads)
        decoded = [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(data))]
        if index >= BURN_IN:
            sizes.append(len(data))
            psnrs.append(cv2.PSNR(image, decoded[-1]))
    measured = np.array(cpu_ms[BURN_IN:])
    return {"cpu_p50_ms": float(np.median(measured)), "cpu_mean_ms": float(measured.mean()),
            "kbps": float(np.mean(sizes) * 8 * VIDEO_FPS / 1e3), "psnr_db": float(np.mean(psnrs)),
            "psnr_min_db": float(np.min(psnrs))}


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    vp8_ms = results["VP8 lipstream"]["cpu_p50_ms"]
    print(f"\n{title}, process CPU")
    print(f"{'setting':<20}{'cpu p50 ms':>11}{'x VP8':>7}{'cpu mean':>10}{'kbps':>8}"
          f"{'PSNR dB':>9}{'min dB':>8}")
    for label, r in results.items():
        print(f"{label:<20}{r['cpu_p50_ms']:>11.2f}{r['cpu_p50_ms'] / vp8_ms:>7.2f}{r['cpu_mean_ms']:>10.2f}"
              f"{r['kbps']:>8.0f}{r['psnr_db']:>9.2f}{r['psnr_min_db']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/codecs.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    contents = {"talking face": talking_frames(args.size, args.frames),
                "panning photo": panning_frames(args.size, args.frames)}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for content, images in contents.items():
        results[content] = {label: run(*candidate, images) for label, candidate in CANDIDATES.items()}
        print_table(f"{content}, {args.size}x{args.size}, {args.frames} frames", results[content])
    print(f"\nshipped H.264: {H264_TUNING}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"frames": args.frames, "size": args.size,
                                    "shipped_h264": asdict(H264_TUNING), "contents": results}, indent=2))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
