"""VP8 encode cost and quality at the server's settings: aiortc's own against lipstream's tuning.

Two kinds of content: a talking face (speech-like controls, head motion and blinks on: what the
server sends) and a photo panning a pixel a frame (the whole picture moving: what a fast speed
setting must survive). Each is converted to I420 once, then the same frames are encoded through
aiortc's encoder (the sender's code path: encode + RTP packetisation) with each setting. Per
setting: this thread's CPU ms per frame (p50, mean), the bitrate, and the PSNR of the decoded
frames against the sent ones. Writes JSON, and a PNG of
one decoded talking-face frame per setting (mouth close-up) to look at.

    python benchmarks/vp8.py [--frames 300] [--size 512] [--out benchmarks/results/vp8.json]
"""

import argparse
import json
import os
import time
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload  # noqa: E402
from skimage import data  # noqa: E402
from stages import speech_like_controls  # noqa: E402

from lipstream.engine.avatar import Avatar, AvatarConfig  # noqa: E402
from lipstream.engine.render import RenderConfig, Renderer  # noqa: E402
from lipstream.streaming.codecs import TUNING, TunedVp8Encoder, Vp8Tuning  # noqa: E402

VIDEO_FPS = 25
VIDEO_CLOCK_HZ = 90_000
BURN_IN = 25  # the first second: the keyframe and the rate control settling
CANDIDATES = {
    "aiortc": None,  # aiortc's own settings: cpu-used -6, noise-sensitivity 4
    "cpu -6, no denoiser": Vp8Tuning(cpu_used=-6),
    "cpu -8, no denoiser": Vp8Tuning(cpu_used=-8),
    "cpu -12, no denoiser": Vp8Tuning(cpu_used=-12),
    "cpu -16, no denoiser": Vp8Tuning(cpu_used=-16),
    "cpu -12, denoiser 4": Vp8Tuning(cpu_used=-12, noise_sensitivity=4),
}


def talking_frames(size: int, frames: int) -> list[np.ndarray]:
    renderer = Renderer(Avatar.default(AvatarConfig(size=size)), RenderConfig(), seed=0)
    return [renderer.render(c, i) for i, c in enumerate(speech_like_controls(frames))]


def panning_frames(size: int, frames: int) -> list[np.ndarray]:
    photo = cv2.resize(np.ascontiguousarray(data.astronaut()), (size, size), interpolation=cv2.INTER_AREA)
    return [np.roll(photo, i, axis=1) for i in range(frames)]


def encoder_for(tuning: Vp8Tuning | None) -> Vp8Encoder:
    if tuning is None:
        return Vp8Encoder()
    encoder = TunedVp8Encoder()
    encoder.tuning = tuning
    return encoder


def run(tuning: Vp8Tuning | None, images: list[np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    encoder, decoder = encoder_for(tuning), av.CodecContext.create("vp8", "r")
    cpu_ms, sizes, psnrs, shown = [], [], [], images[0]
    for index, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index * VIDEO_CLOCK_HZ // VIDEO_FPS, Fraction(1, VIDEO_CLOCK_HZ)
        start = time.thread_time()
        payloads, _ = encoder.encode(frame)
        cpu_ms.append((time.thread_time() - start) * 1e3)
        data = b"".join(vp8_depayload(p) for p in payloads)
        decoded = [f.to_ndarray(format="rgb24") for f in decoder.decode(av.Packet(data))]
        if index >= BURN_IN:
            sizes.append(len(data))
            psnrs.append(cv2.PSNR(image, decoded[-1]))
        if index == len(images) // 2:
            shown = decoded[-1]
    measured = np.array(cpu_ms[BURN_IN:])
    return {"cpu_p50_ms": float(np.median(measured)), "cpu_mean_ms": float(measured.mean()),
            "kbps": float(np.mean(sizes) * 8 * VIDEO_FPS / 1e3), "psnr_db": float(np.mean(psnrs)),
            "psnr_min_db": float(np.min(psnrs))}, shown


def mouth_crop(image: np.ndarray) -> np.ndarray:
    """The lower middle of the frame, where the mouth moves, enlarged 2x."""
    h, w = image.shape[:2]
    crop = image[h * 9 // 20 : h * 16 // 20, w // 4 : w * 3 // 4]
    return cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    print(f"\nVP8, {title}, one thread")
    print(f"{'setting':<24}{'cpu p50 ms':>11}{'cpu mean':>10}{'kbps':>8}{'PSNR dB':>9}{'min dB':>8}")
    for label, r in results.items():
        print(f"{label:<24}{r['cpu_p50_ms']:>11.2f}{r['cpu_mean_ms']:>10.2f}{r['kbps']:>8.0f}"
              f"{r['psnr_db']:>9.2f}{r['psnr_min_db']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vp8.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    talking = talking_frames(args.size, args.frames)
    crops = [mouth_crop(talking[len(talking) // 2])]
    contents = {"talking face": talking, "panning photo": panning_frames(args.size, args.frames)}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for content, images in contents.items():
        results[content] = {}
        for label, tuning in CANDIDATES.items():
            results[content][label], shown = run(tuning, images)
            if images is talking:
                crops.append(mouth_crop(shown))
        print_table(f"{content}, {args.size}x{args.size}, {args.frames} frames", results[content])
    print(f"\nshipped: {TUNING}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"frames": args.frames, "size": args.size, "shipped": asdict(TUNING),
                                    "contents": results}, indent=2))
    png = args.out.with_suffix(".png")  # source, then each setting, left to right
    cv2.imwrite(str(png), cv2.cvtColor(np.hstack(crops), cv2.COLOR_RGB2BGR))
    print(f"\nwritten {args.out} and {png}")


if __name__ == "__main__":
    main()
