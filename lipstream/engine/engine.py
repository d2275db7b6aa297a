"""Engine: one session's audio in, frames out, each frame paired with the audio it was made from.

An Engine is a `MotionStream` (audio -> controls, one set per video frame) and a `Renderer`
(controls -> picture of this avatar). Frame n is made from input samples [640 n, 640 (n + 1)) plus
the motion model's lookahead; the audio handed out with it is exactly those samples (at 16 kHz,
and as pushed at the caller's rate), so a sink that plays them with the frame plays sound and
picture in sync, `latency_samples` behind the input.

Threads: one producer (push_audio, end_segment, clear) and one consumer (pop_frame), not
concurrently: the caller serialises them (`AsyncEngine` and the server do).
"""

from dataclasses import dataclass, replace

import numpy as np

from lipstream.engine.avatar import Avatar
from lipstream.engine.config import EngineConfig
from lipstream.engine.controls import MotionOutput
from lipstream.engine.device import resolve_device
from lipstream.engine.motion import MotionModel
from lipstream.engine.render import RenderConfig, Renderer
from lipstream.engine.stream import FrameTimes, MotionStream

__all__ = ["Engine", "EngineConfig", "Frame"]


@dataclass(frozen=True)
class Frame(FrameTimes):
    index: int  # video frame number since the session started
    image: np.ndarray  # (size, size, 3) uint8 RGB, read-only (a skipped frame shares the last one)
    audio: np.ndarray  # (640,) float32 at 16 kHz: the input this frame was made from
    controls: np.ndarray  # (N_CONTROLS,) the smoothed controls it was rendered with
    visemes: np.ndarray | None  # (N_VISEMES,) when the model predicts them
    rendered: bool  # False when the caller skipped rendering (image repeats the last one)
    input_audio: np.ndarray  # the same stretch of input as pushed: (n,) or (n, channels)
    input_rate: int  # Hz, the rate input_audio was pushed at


class Engine:
    def __init__(self, avatar: Avatar, config: EngineConfig | None = None,
                 model: MotionModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.avatar = avatar
        self.motion = MotionStream(self.config, model)
        self.renderer = Renderer(avatar, render_config(self.config), seed=self.config.seed)
        self._last_image = avatar.image

    @property
    def model(self) -> MotionModel:
        return self.motion.model

    @property
    def lookahead_samples(self) -> int:
        return self.motion.lookahead_samples

    @property
    def latency_samples(self) -> int:
        """How far behind its input a frame (and its audio) leaves: one frame + lookahead."""
        return self.motion.latency_samples

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Add input audio: int or float PCM, mono or (samples, channels), any rate."""
        self.motion.push_audio(pcm, sample_rate)

    def end_segment(self) -> None:
        """End of one turn: all its frames become ready; pushing more starts the next turn."""
        self.motion.end_segment()

    def finish(self) -> None:
        """End of a file: frames up to the end of the real audio become ready."""
        self.motion.finish()

    def clear(self) -> None:
        """Drop input not yet turned into frames (barge-in). Frames go on; the mouth eases to rest."""
        self.motion.clear()

    def ready(self) -> int:
        """How many frames can be made now."""
        return self.motion.ready()

    def pop_frame(self, render: bool = True) -> Frame | None:
        """The next frame, or None if its audio has not all arrived.

        With render=False the controls still advance but the image repeats the last one: a
        caller that has fallen behind stays in sync by skipping work, not by queueing it.
        """
        window = self.next_window()
        if window is None:
            return None
        return self.complete(self.model.predict(window), render)

    def next_window(self) -> np.ndarray | None:
        """The next frame's mel window (T, N_MELS), None until its audio is in; see `complete`."""
        return self.motion.next_window()

    def complete(self, output: MotionOutput, render: bool = True) -> Frame:
        """The next frame from the model's output for `next_window()` (`pop_frame` split in two
        around the model, so that `EngineGroup` can batch the model across engines)."""
        motion = self.motion.complete(output)
        if render:
            image = self.renderer.render(motion.controls, motion.index)
            image.flags.writeable = False  # shared by the frames that repeat it
            self._last_image = image
        return Frame(index=motion.index, image=self._last_image, audio=motion.audio,
                     controls=motion.controls, visemes=motion.visemes, rendered=render,
                     input_audio=motion.input_audio, input_rate=motion.input_rate)

    def frames(self) -> list[Frame]:
        """Every frame that can be made now, rendered."""
        out = []
        while (frame := self.pop_frame()) is not None:
            out.append(frame)
        return out


def render_config(config: EngineConfig) -> RenderConfig:
    """The renderer's settings, its kernels on the GPU when the engine's device resolved to one."""
    if resolve_device(config.device).kernels == "cuda":
        return replace(config.render, device="cuda")
    return config.render
