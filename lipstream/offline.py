"""`lipstream render`: a photo and an audio file -> a lip-synced mp4, through the streaming engine."""

import argparse
import itertools
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from lipstream.engine.audio import AudioFile
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.config import EngineConfig, seed_problem
from lipstream.engine.constants import MAX_SIZE_PX, MIN_SIZE_PX, SAMPLE_RATE, VIDEO_FPS, size_problem
from lipstream.engine.device import add_device_argument, choose_device
from lipstream.engine.engine import Engine
from lipstream.errors import ConfigError, LipstreamError
from lipstream.streaming.encoders import add_file_codec_argument, resolve_video_codec
from lipstream.streaming.files import Mp4Writer, OutputError, check_video_out

_DEFAULT_AVATAR = AvatarConfig()
_DEFAULT_ENGINE = EngineConfig()


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face", type=Path, help="face photo (default: the bundled avatar)")
    parser.add_argument("--audio", type=Path, required=True, help="speech: wav, mp3, m4a, ogg, flac...")
    parser.add_argument("--out", type=Path, required=True, help="output .mp4")
    parser.add_argument("--size", type=int, default=_DEFAULT_AVATAR.size,
                        help=f"output side in pixels, even, {MIN_SIZE_PX} to {MAX_SIZE_PX} "
                        f"(default {_DEFAULT_AVATAR.size})")
    parser.add_argument("--seed", type=int, default=_DEFAULT_ENGINE.seed,
                        help="seed of blinks and head motion")
    parser.add_argument("--motion", default=_DEFAULT_ENGINE.motion,
                        help="'baseline', or an exported .onnx (default: the shipped model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(parser)
    add_file_codec_argument(parser)


def run_render(args: argparse.Namespace) -> int:
    device = choose_device(args.device).device  # fail before the slow parts: --device cuda, no GPU
    check_size(args.size)
    check_seed(args.seed)
    check_video_out(args.out)
    check_not_an_input(args.out, {"--audio": args.audio, "--face": args.face})
    audio = AudioFile(args.audio)
    chunks = audio.chunks()
    first = next(chunks)  # an empty or undecodable file fails here, before the slow parts
    config = AvatarConfig(size=args.size)
    avatar = Avatar.from_image(args.face, config) if args.face else Avatar.default(config)
    engine = Engine(avatar, EngineConfig(seed=args.seed, motion=args.motion, device=args.device))
    # logged, like the device, only once the inputs are known good: an error stays the only line
    encoder = resolve_video_codec(args.video_codec, args.device, device).h264_encoder
    try:
        _render(itertools.chain([first], chunks), audio.duration_s, engine, Mp4Writer(args.out, avatar.size,
                encoder=encoder), progress=not args.no_progress)
    except BaseException:
        args.out.unlink(missing_ok=True)  # the audio failed midway: leave nothing half-written
        raise
    return 0


def check_size(size_px: int) -> None:
    problem = size_problem(size_px)
    if problem is not None:
        raise LipstreamError(f"{problem}, e.g. {_DEFAULT_AVATAR.size}")


def check_not_an_input(out: Path, inputs: dict[str, Path | None]) -> None:
    """Writing the output truncates it: it must not be a file the render reads (a .mp4 with the
    speech in it, given as both --audio and --out, would be destroyed)."""
    for option, path in inputs.items():
        if path is not None and out.exists() and path.exists() and os.path.samefile(out, path):
            raise OutputError(f"--out {out} is the {option} file: writing would destroy it; "
                              "give the output a new name")


def check_seed(seed: int) -> None:
    """EngineConfig's own rule, said of the option before the audio is decoded and the photo analysed."""
    if (problem := seed_problem(seed)) is not None:
        raise ConfigError(problem)


def _render(chunks: Iterable[NDArray[np.float32]], duration_s: float | None, engine: Engine,
            writer: Mp4Writer, progress: bool) -> None:
    """Decode, render and write as the audio arrives: memory stays flat in the file's length."""
    total = None if duration_s is None else math.ceil(duration_s * VIDEO_FPS)
    with writer, \
            tqdm(total=total, unit="frame", disable=not progress) as bar:
        received = 0  # 16 kHz samples pushed so far
        for chunk in chunks:
            engine.push_audio(chunk, SAMPLE_RATE)
            received += chunk.size
            bar.update(_write_ready(engine, writer, received))
        engine.finish()
        bar.update(_write_ready(engine, writer, received))


def _write_ready(engine: Engine, writer: Mp4Writer, received: int) -> int:
    """Write every frame the engine can make now; returns how many."""
    written = 0
    while (frame := engine.pop_frame()) is not None:
        # I420, what the encoder takes: the GPU draws it (no RGB is made), the CPU converts once
        writer.write_i420(frame.yuv, frame.index)
        # the last chunk is padded with silence; the file keeps the input's exact length
        writer.write_audio(frame.audio[: max(received - frame.audio_pts, 0)], frame.audio_pts)
        written += 1
    return written
