"""Watch two motion models on one recorded utterance: one mp4, the two faces side by side, the voice.

Each face is rendered the way `lipstream render` renders a file (`lipstream.training.lipsync_render`).
Under the faces, the mouth opening over the last seconds: the phone-derived truth (white) and
each model's shown aperture (its colour), so a frame grab says which mouth is nearer the speech.
`--frames` also writes a few PNG stills, at the utterance's widest true openings and its /p b m/.

    python benchmarks/sidebyside.py --old old.onnx --new lipstream/models/motion.onnx \\
        [--utterance speech_orig_16k] [--out benchmarks/results/sidebyside.mp4] [--frames DIR]
"""

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lipstream.engine.avatar import Avatar, AvatarConfig  # noqa: E402
from lipstream.engine.constants import MEL_FRAMES_PER_VIDEO_FRAME, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS  # noqa: E402
from lipstream.engine.motion import load_motion_model  # noqa: E402
from lipstream.streaming.files import Mp4Writer  # noqa: E402
from lipstream.training.calibrate import aperture  # noqa: E402
from lipstream.training.corpus import Utterance  # noqa: E402
from lipstream.training.lipsync_render import render_engine, wav_path  # noqa: E402
from lipstream.training.recorded_set import recorded_set  # noqa: E402

FACE_PX = 320  # each face; the video is two faces wide and square
CANVAS_PX = 2 * FACE_PX
TRACE_SECONDS = 4  # of aperture history under the faces
TRACE_FRAMES = TRACE_SECONDS * VIDEO_FPS
TRUTH_RGB, OLD_RGB, NEW_RGB = (255, 255, 255), (255, 150, 60), (60, 200, 255)
STILLS = 4  # PNGs written with --frames


@dataclass(frozen=True)
class Take:
    label: str
    colour: tuple[int, int, int]
    images: list[np.ndarray]
    aperture: np.ndarray  # (N,) the shown controls' opening, jaw_open * (1 - lip_press)


def truth_aperture(utt: Utterance, n_frames: int) -> np.ndarray:
    """(n_frames,) the phone-derived opening, each video frame's mel frames averaged."""
    per_frame = utt.controls[: n_frames * MEL_FRAMES_PER_VIDEO_FRAME]
    n = len(per_frame) // MEL_FRAMES_PER_VIDEO_FRAME
    hops = per_frame[: n * MEL_FRAMES_PER_VIDEO_FRAME].reshape(n, MEL_FRAMES_PER_VIDEO_FRAME, -1)
    means = hops.mean(axis=1)
    return np.pad(aperture(means), (0, n_frames - n))


def take(label: str, colour: tuple[int, int, int], model_path: str, avatar: Avatar, audio: Path) -> Take:
    rendered = render_engine(avatar, load_motion_model(model_path), audio, seed=0, closure_gain=None)
    assert rendered.controls is not None
    return Take(label, colour, rendered.images, aperture(rendered.controls))


def trace(panel: np.ndarray, series: np.ndarray, n: int, colour: tuple[int, int, int]) -> None:
    """Draw the last TRACE_FRAMES values of `series` up to frame n across the panel (0 at the bottom)."""
    height, width = panel.shape[:2]
    start = max(0, n + 1 - TRACE_FRAMES)
    values = np.clip(series[start : n + 1], 0, 1)
    xs = (np.arange(values.size) * (width - 1) / (TRACE_FRAMES - 1)).astype(np.int32)
    ys = ((1 - values) * (height - 1)).astype(np.int32)
    cv2.polylines(panel, [np.stack([xs, ys], axis=1)], False, colour, 2, cv2.LINE_AA)


def compose(takes: tuple[Take, Take], truth: np.ndarray, n: int) -> np.ndarray:
    canvas = np.zeros((CANVAS_PX, CANVAS_PX, 3), np.uint8)
    for i, t in enumerate(takes):
        canvas[:FACE_PX, i * FACE_PX : (i + 1) * FACE_PX] = t.images[min(n, len(t.images) - 1)]
        cv2.putText(canvas, t.label, (i * FACE_PX + 8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, t.colour, 2,
                    cv2.LINE_AA)
    panel = canvas[FACE_PX + 30 :]
    trace(panel, truth, n, TRUTH_RGB)
    for t in takes:
        trace(panel, t.aperture, n, t.colour)
    cv2.putText(canvas, "mouth opening: truth (white), last 4 s", (8, FACE_PX + 22),
                cv2.FONT_HERSHEY_SIMPLEX, 0.55, TRUTH_RGB, 1, cv2.LINE_AA)
    return canvas


def stills(utt: Utterance, truth: np.ndarray) -> list[int]:
    """Frames worth a look: the widest true openings and the middle of each /p b m/ closure."""
    widest = list(np.argsort(truth)[::-1][: STILLS // 2])
    closures = [int((p.start_s + p.end_s) / 2 * VIDEO_FPS) for p in utt.phones if p.label in ("p", "b", "m")]
    return sorted({int(i) for i in widest} | set(closures[: STILLS - len(widest)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the model before (.onnx)")
    p.add_argument("--new", required=True, help="the model after (.onnx)")
    p.add_argument("--utterance", default="speech_orig_16k", help="a recorded utterance's name")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sidebyside.mp4"))
    p.add_argument("--frames", type=Path, help="also write a few PNG stills here")
    args = p.parse_args()
    utts = {u.voice: u for u in recorded_set()}
    if args.utterance not in utts:
        raise SystemExit(f"--utterance {args.utterance!r}: choose one of {', '.join(sorted(utts))}")
    utt = utts[args.utterance]
    avatar = Avatar.default(AvatarConfig(size=FACE_PX))
    with tempfile.TemporaryDirectory() as tmp:
        audio = wav_path(utt.audio, Path(tmp), "speech")
        takes = (take("old", OLD_RGB, args.old, avatar, audio), take("new", NEW_RGB, args.new, avatar, audio))
    n_frames = min(len(t.images) for t in takes)
    truth = truth_aperture(utt, n_frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(args.out, CANVAS_PX) as writer:
        for n in range(n_frames):
            writer.write_video(compose(takes, truth, n), n)
            chunk = utt.audio[n * SAMPLES_PER_VIDEO_FRAME : (n + 1) * SAMPLES_PER_VIDEO_FRAME]
            writer.write_audio(chunk, n * SAMPLES_PER_VIDEO_FRAME)
    print(f"wrote {args.out}: {n_frames} frames, {utt.voice}: {utt.text}")
    if args.frames:
        args.frames.mkdir(parents=True, exist_ok=True)
        for n in stills(utt, truth):
            path = args.frames / f"{utt.voice}-{n:04d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(compose(takes, truth, n), cv2.COLOR_RGB2BGR))
            shown = ", ".join(f"{t.label} {t.aperture[n]:.2f}" for t in takes)
            print(f"  {path}: truth {truth[n]:.2f}, {shown}")


if __name__ == "__main__":
    main()
