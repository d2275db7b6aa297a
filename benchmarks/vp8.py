"""VP8 encode cost and picture at the server's settings: speed, bitrate and libvpx options.

Two kinds of content: a talking face (speech-like controls, head motion and blinks on: what the
server sends) and a photo panning a pixel a frame (the whole picture moving: what a fast speed
setting must survive). Each frame is converted to I420 once, then encoded by every candidate in
turn (interleaved frame by frame, in a rotating order, so a busy second of a shared machine hits
them all alike) through aiortc's sender code path (encode + RTP packetisation), and decoded.
Per candidate: CPU ms per frame (p50, mean), kbit/s, PSNR and SSIM of the decoded frames against
the sent ones. Writes JSON, and a PNG of one decoded talking-face mouth close-up per candidate.
`benchmarks/codecs.py` runs H.264 through the same loop.

    python benchmarks/vp8.py [--frames 300] [--size 512] [--table speed|bitrate|options]
"""

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from aiortc.codecs.base import Encoder  # noqa: E402
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload  # noqa: E402
from skimage import data  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402
from stages import speech_like_controls  # noqa: E402

from lipstream.engine.avatar import Avatar, AvatarConfig  # noqa: E402
from lipstream.engine.render import RenderConfig, Renderer  # noqa: E402
from lipstream.streaming.codecs import CEILING_BPS_AT_SIDE, TUNING, TunedVp8Encoder, Vp8Tuning  # noqa: E402

VIDEO_FPS = 25
VIDEO_CLOCK_HZ = 90_000
BURN_IN = 25  # the first second: the keyframe and the rate control settling
SSIM_EVERY = 5  # SSIM costs more than an encode: every 5th frame is enough for a mean
BITRATES = (500_000, 800_000, 1_200_000, 1_500_000)  # aiortc's start .. its VP8 maximum
STATIC_THRESHOLDS = (1, 250, 1000)  # aiortc's own, and around the shipped one
NO_CEILING_BITS_PER_PIXEL = 1.0  # over aiortc's own 1.5 Mbit/s maximum at any session size


class Codec(NamedTuple):
    make: Callable[[], Encoder]  # a fresh sender-side encoder
    decoder: str  # FFmpeg decoder name
    depayload: Callable[[bytes], bytes]  # RTP payload -> codec bitstream


@dataclass(frozen=True)
class Vp8Trial(Vp8Tuning):
    """The shipped tuning plus libvpx options aiortc does not set or sets otherwise."""

    extra: tuple[tuple[str, str], ...] = ()
    gop_frames: int | None = None  # None: aiortc's kf_max_dist

    def options(self) -> dict[str, str]:
        return {**super().options(), **dict(self.extra)}

    def assign(self, name: str, value: Any, context: Any) -> Any:
        if name == "gop_size" and self.gop_frames is not None:
            return self.gop_frames
        return super().assign(name, value, context)


def tuned_codec(own: Callable[[], Encoder], tuned: Callable[[], Encoder], name: str,
                depayload: Callable[[bytes], bytes], tuning: Any, bitrate: int | None) -> Codec:
    """aiortc's own encoder (`tuning` None) or lipstream's with `tuning`, started at `bitrate` (as
    REMB sets it)."""
    def make() -> Encoder:
        encoder = own() if tuning is None else tuned()
        if tuning is not None:
            encoder.tuning = tuning  # type: ignore[attr-defined]
        if bitrate is not None:
            encoder.target_bitrate = bitrate  # type: ignore[attr-defined]
        return encoder

    return Codec(make, name, depayload)


def vp8(tuning: Vp8Tuning | None = TUNING, bitrate: int | None = None) -> Codec:
    """aiortc's own VP8 (tuning None) or lipstream's, started at `bitrate`."""
    return tuned_codec(Vp8Encoder, TunedVp8Encoder, "vp8", vp8_depayload, tuning, bitrate)


def uncapped(tuning: Vp8Tuning = TUNING) -> Vp8Tuning:
    """`tuning` without lipstream's bitrate ceiling: aiortc's own maximum."""
    return replace(tuning, max_bits_per_pixel=NO_CEILING_BITS_PER_PIXEL)


SPEED = {
    "aiortc": vp8(None),  # aiortc's own settings: cpu-used -6, noise-sensitivity 4
    "cpu -6, no denoiser": vp8(Vp8Tuning(cpu_used=-6)),
    "cpu -12, no denoiser": vp8(Vp8Tuning(cpu_used=-12)),
    "cpu -16, no denoiser": vp8(Vp8Tuning(cpu_used=-16)),
}
BITRATE = {  # the ceiling off; first what the server sent before the ceiling, at REMB's maximum
    "before: static 1, 1500k": vp8(uncapped(replace(TUNING, static_thresh=1)), BITRATES[-1]),
    **{f"shipped {rate // 1000}k": vp8(uncapped(), rate) for rate in BITRATES},
}


def at_ceiling(tuning: Vp8Tuning = TUNING) -> Codec:
    """`tuning` at the most a 512 px face is sent at (where a receiver's estimate takes it)."""
    return vp8(tuning, CEILING_BPS_AT_SIDE)


OPTIONS = {  # each at the 512 px ceiling, against the shipped tuning
    "shipped": at_ceiling(),
    **{f"static-thresh {t}": at_ceiling(replace(TUNING, static_thresh=t)) for t in STATIC_THRESHOLDS},
    "max-intra-rate 300": at_ceiling(Vp8Trial(extra=(("max-intra-rate", "300"),))),
    "error-resilient": at_ceiling(Vp8Trial(extra=(("error-resilient", "default"),))),
    "auto-alt-ref 0": at_ceiling(Vp8Trial(extra=(("auto-alt-ref", "0"),))),
    "partitions 2 (4)": at_ceiling(Vp8Trial(extra=(("partitions", "2"),))),
    "rc buffer 0.5 s": at_ceiling(Vp8Trial(extra=(("bufsize", str(CEILING_BPS_AT_SIDE // 2)),))),
    "keyframe every 10 s": at_ceiling(Vp8Trial(gop_frames=10 * VIDEO_FPS)),
}
TABLES = {"speed": SPEED, "bitrate": BITRATE, "options": OPTIONS}


def talking_frames(size: int, frames: int) -> list[np.ndarray]:
    renderer = Renderer(Avatar.default(AvatarConfig(size=size)), RenderConfig(), seed=0)
    return [renderer.render(c, i) for i, c in enumerate(speech_like_controls(frames))]


def panning_frames(size: int, frames: int) -> list[np.ndarray]:
    photo = cv2.resize(np.ascontiguousarray(data.astronaut()), (size, size), interpolation=cv2.INTER_AREA)
    return [np.roll(photo, i, axis=1) for i in range(frames)]


def i420(image: np.ndarray, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = index * VIDEO_CLOCK_HZ // VIDEO_FPS, Fraction(1, VIDEO_CLOCK_HZ)
    return frame


@dataclass
class Run:
    """One candidate's encoder, decoder and what it measured so far."""

    codec: Codec
    keep: int = -1  # the frame index whose decoded picture it keeps to look at
    encoder: Encoder = field(init=False)
    decoder: Any = field(init=False)
    cpu_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    psnrs: list[float] = field(default_factory=list)
    ssims: list[float] = field(default_factory=list)
    shown: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.encoder, self.decoder = self.codec.make(), av.CodecContext.create(self.codec.decoder, "r")

    def step(self, image: np.ndarray, frame: av.VideoFrame, index: int, clock: Callable[[], float]) -> None:
        start = clock()
        payloads, _ = self.encoder.encode(frame)
        self.cpu_ms.append((clock() - start) * 1e3)
        bitstream = b"".join(self.codec.depayload(p) for p in payloads)
        decoded = [f.to_ndarray(format="rgb24") for f in self.decoder.decode(av.Packet(bitstream))][-1]
        if index >= BURN_IN:
            self.sizes.append(len(bitstream))
            self.psnrs.append(cv2.PSNR(image, decoded))
            if index % SSIM_EVERY == 0:
                self.ssims.append(structural_similarity(image, decoded, channel_axis=2))
        if index == self.keep:
            self.shown = decoded

    def summary(self) -> dict[str, float]:
        measured = np.array(self.cpu_ms[BURN_IN:])
        return {"cpu_p50_ms": float(np.median(measured)), "cpu_mean_ms": float(measured.mean()),
                "kbps": float(np.mean(self.sizes) * 8 * VIDEO_FPS / 1e3),
                "psnr_db": float(np.mean(self.psnrs)), "psnr_min_db": float(np.min(self.psnrs)),
                "ssim": float(np.mean(self.ssims))}


def measure(candidates: dict[str, Codec], images: list[np.ndarray],
            clock: Callable[[], float] = time.thread_time,
            keep: int = -1) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Every candidate encodes every frame, interleaved; per candidate its summary and the decoded
    picture of frame `keep`."""
    runs = {label: Run(codec, keep) for label, codec in candidates.items()}
    order = list(runs.values())
    for index, image in enumerate(images):
        frame = i420(image, index)
        shift = index % len(order)  # rotate who goes first: caches and the clock's moods shared
        for run in order[shift:] + order[:shift]:
            run.step(image, frame, index, clock)
    shown = {label: run.shown for label, run in runs.items() if run.shown is not None}
    return {label: run.summary() for label, run in runs.items()}, shown


def mouth_crop(image: np.ndarray) -> np.ndarray:
    """The lower middle of the frame, where the mouth moves, enlarged 2x."""
    h, w = image.shape[:2]
    crop = image[h * 9 // 20 : h * 16 // 20, w // 4 : w * 3 // 4]
    return cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    """Each candidate, with its CPU as a ratio of the first one's (measured in the same run)."""
    first = next(iter(results.values()))["cpu_mean_ms"]
    print(f"\n{title}")
    print(f"{'candidate':<24}{'cpu p50 ms':>11}{'cpu mean':>10}{'x first':>8}{'kbps':>7}"
          f"{'PSNR dB':>9}{'min dB':>8}{'SSIM':>8}")
    for label, r in results.items():
        print(f"{label:<24}{r['cpu_p50_ms']:>11.2f}{r['cpu_mean_ms']:>10.2f}{r['cpu_mean_ms'] / first:>8.2f}"
              f"{r['kbps']:>7.0f}{r['psnr_db']:>9.2f}{r['psnr_min_db']:>8.2f}{r['ssim']:>8.4f}")


def contents(size: int, frames: int) -> dict[str, list[np.ndarray]]:
    return {"talking face": talking_frames(size, frames), "panning photo": panning_frames(size, frames)}


def run_tables(tables: dict[str, dict[str, Codec]], args: argparse.Namespace, clock: Callable[[], float],
               shipped: dict[str, Any]) -> None:
    """Measure each table on each content; print, write JSON and the mouth close-ups' PNG."""
    results: dict[str, dict[str, Any]] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for content, images in contents(args.size, args.frames).items():
        middle = len(images) // 2 if content == "talking face" else -1
        crops = [mouth_crop(images[middle])] if middle >= 0 else []
        for table, candidates in tables.items():
            results.setdefault(table, {})[content], shown = measure(candidates, images, clock, middle)
            print_table(f"{table}: {content}, {args.size} px, {args.frames} frames", results[table][content])
            crops += [mouth_crop(shown[label]) for label in candidates if label in shown]
        if crops:  # the source, then each candidate of each table, left to right
            png = args.out.with_suffix(".png")
            cv2.imwrite(str(png), cv2.cvtColor(np.hstack(crops), cv2.COLOR_RGB2BGR))
    args.out.write_text(json.dumps({"frames": args.frames, "size": args.size, "shipped": shipped,
                                    "tables": results}, indent=2))
    print(f"\nwritten {args.out} and {args.out.with_suffix('.png')}")


def parse(description: str, tables: dict[str, dict[str, Codec]], out: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--table", choices=tables, action="append", help="default: all")
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    return args


def main() -> None:
    args = parse(__doc__.splitlines()[0], TABLES, "benchmarks/results/vp8.json")
    chosen = {name: TABLES[name] for name in args.table or TABLES}
    run_tables(chosen, args, time.thread_time, asdict(TUNING))


if __name__ == "__main__":
    main()
