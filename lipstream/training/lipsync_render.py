"""Rendering for the lip-sync benchmarks: speech through the engine (or the truth controls through
the renderer), the frames through H.264 and back, FaceMesh's reading of the mouth.

This is the path `lipstream render` takes a file (WAV written and read back with `load_audio`,
pushed into an `Engine`, finished, encoded with the CLI's `Mp4Writer`), so compression is part of
what is measured. Used by `benchmarks/lipsync.py` and `benchmarks/sidebyside.py`.
"""

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import MEL_FRAMES_PER_VIDEO_FRAME, SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.controls import REST
from lipstream.engine.engine import Engine, EngineConfig
from lipstream.engine.motion import MotionModel
from lipstream.engine.render import Renderer
from lipstream.engine.smoothing import ControlSmoother
from lipstream.streaming.files import Mp4Writer
from lipstream.training.corpus import Utterance
from lipstream.training.evaluate import MouthMeter, read_video_frames
from lipstream.training.lipsync_metrics import Measured


@dataclass(frozen=True)
class Rendered:
    images: list[np.ndarray]
    visemes: np.ndarray | None  # (N,) argmax of the model's viseme output
    controls: np.ndarray | None = None  # (N, N_CONTROLS) what the face was rendered with (models only)


def wav_path(audio: np.ndarray, folder: Path, name: str) -> Path:
    path = folder / f"{name}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def render_engine(avatar: Avatar, model: MotionModel, audio_path: Path, seed: int,
                  closure_gain: float | None) -> Rendered:
    """`lipstream render`'s path: load_audio -> Engine push/finish -> frames."""
    config = EngineConfig(seed=seed) if closure_gain is None else \
        EngineConfig(seed=seed, bilabial_closure=closure_gain)
    engine = Engine(avatar, config, model=model)
    engine.push_audio(load_audio(audio_path), SAMPLE_RATE)
    engine.finish()
    frames = engine.frames()
    probs = [f.visemes for f in frames if f.visemes is not None]
    visemes = np.array([int(np.argmax(p)) for p in probs]) if frames and len(probs) == len(frames) else None
    return Rendered([f.image for f in frames], visemes, np.array([f.controls for f in frames]))


def render_oracle(avatar: Avatar, utt: Utterance, seed: int, smooth: bool) -> Rendered:
    """The truth controls (each frame's 4 mel frames averaged) into the Renderer, straight or
    through the engine's smoother (which shows what the smoothing alone costs)."""
    renderer = Renderer(avatar, EngineConfig().render, seed=seed)
    smoother = ControlSmoother(EngineConfig().smoothing)
    n_frames = -(-utt.audio.size // SAMPLES_PER_VIDEO_FRAME)
    images = []
    for n in range(n_frames):
        mel = utt.controls[n * MEL_FRAMES_PER_VIDEO_FRAME : (n + 1) * MEL_FRAMES_PER_VIDEO_FRAME]
        controls = mel.mean(axis=0) if len(mel) else REST
        images.append(renderer.render(smoother.step(controls) if smooth else controls, n))
    return Rendered(images, None)


def through_h264(images: list[np.ndarray], path: Path) -> list[np.ndarray]:
    with Mp4Writer(path, images[0].shape[0]) as writer:
        for index, image in enumerate(images):
            writer.write_video(image, index)
    frames, _ = read_video_frames(str(path))
    return frames


def measure(rendered: Rendered, video: Path, static: bool) -> Measured:
    frames = through_h264(rendered.images, video)
    with MouthMeter(static=static) as meter:  # fresh per video
        readings = [meter.read(f) for f in frames]
    aperture = np.array([r.aperture if r.found else np.nan for r in readings])
    return Measured(aperture, rendered.visemes, np.array([r.width for r in readings]), rendered.controls)
