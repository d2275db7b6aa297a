"""`lipstream render`: a photo and an audio file -> a lip-synced mp4, through the streaming engine."""

import argparse
from pathlib import Path

from tqdm import tqdm

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.engine import Engine, EngineConfig
from lipstream.streaming.files import Mp4Writer, check_writable

_DEFAULT_AVATAR = AvatarConfig()
_DEFAULT_ENGINE = EngineConfig()


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face", type=Path, help="face photo (default: the bundled avatar)")
    parser.add_argument("--audio", type=Path, required=True, help="speech: wav, mp3, m4a, ogg, flac...")
    parser.add_argument("--out", type=Path, required=True, help="output .mp4")
    parser.add_argument("--size", type=int, default=_DEFAULT_AVATAR.size, help="output side in pixels")
    parser.add_argument("--seed", type=int, default=_DEFAULT_ENGINE.seed,
                        help="seed of blinks and head motion")
    parser.add_argument("--motion", default=_DEFAULT_ENGINE.motion,
                        help="'baseline', or an exported .onnx (default: the shipped model)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_render(args: argparse.Namespace) -> int:
    check_writable(args.out)  # fail before the slow parts
    audio = load_audio(args.audio)
    config = AvatarConfig(size=args.size)
    avatar = Avatar.from_image(args.face, config) if args.face else Avatar.default(config)
    engine = Engine(avatar, EngineConfig(seed=args.seed, motion=args.motion))
    engine.push_audio(audio, 16_000)
    engine.finish()
    n_frames = -(-audio.size // SAMPLES_PER_VIDEO_FRAME)
    with Mp4Writer(args.out, avatar.size) as writer, \
            tqdm(total=n_frames, unit="frame", disable=args.no_progress) as bar:
        while (frame := engine.pop_frame()) is not None:
            writer.write_video(frame.image, frame.index)
            # the last chunk is padded with silence; the file keeps the input's exact length
            writer.write_audio(frame.audio[: max(audio.size - frame.audio_pts, 0)], frame.audio_pts)
            bar.update()
    return 0
