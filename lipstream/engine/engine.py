"""Engine: one session's audio in, frames out, each frame paired with the audio it was made from.

An Engine is a `MotionStream` (audio -> controls, one set per video frame) and a `Renderer`
(controls -> picture of this avatar). Frame n is made from input samples [640 n, 640 (n + 1)) plus
the motion model's lookahead; the audio handed out with it is exactly those samples (at 16 kHz,
and as pushed at the caller's rate), so a sink that plays them with the frame plays sound and
picture in sync, `latency_samples` behind the input.

Threads: one producer (push_audio, end_segment, clear) and one consumer (pop_frame), not
concurrently: the caller serialises them (`AsyncEngine` and the server do).
"""

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lipstream.engine.avatar import Avatar
from lipstream.engine.config import EngineConfig
from lipstream.engine.controls import MotionOutput
from lipstream.engine.device import device_renderer, resolve_device
from lipstream.engine.i420 import Changes, to_i420
from lipstream.engine.motion import MotionModel
from lipstream.engine.render import RenderConfig, Renderer
from lipstream.engine.stream import FrameTimes, MotionStream

if TYPE_CHECKING:  # the CPU path imports nothing GPU-related, not even for types
    from lipstream.kernels.device_render import DeviceRenderer

__all__ = ["Engine", "EngineConfig", "Frame", "Picture"]


class Picture:
    """One drawn picture, held in the form its renderer made: RGB (the CPU) or I420 (the GPU,
    what the video encoders take). The other form is converted on first use, once, and shared by
    every frame that repeats the picture; both forms are read-only. With the CPU renderer's
    `changes`, the I420 is its moved photo's with only the changed regions converted."""

    def __init__(self, drawn: np.ndarray, i420: bool, changes: Changes | None = None) -> None:
        self._drawn = _read_only(drawn)  # the form made; the other is converted from it
        self._rgb = None if i420 else drawn
        self._yuv = drawn if i420 else None
        self._changes = changes
        self._lock = threading.Lock()  # a frame may be read from more than one thread

    @property
    def rgb(self) -> np.ndarray:
        """(S, S, 3) uint8 RGB."""
        with self._lock:
            if self._rgb is None:
                self._rgb = _read_only(cv2.cvtColor(self._drawn, cv2.COLOR_YUV2RGB_I420))
            return self._rgb

    @property
    def yuv(self) -> np.ndarray:
        """(S * 3 // 2, S) uint8 I420."""
        with self._lock:
            if self._yuv is None:
                self._yuv = _read_only(to_i420(self._drawn, self._changes))
            return self._yuv


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Frame(FrameTimes):
    index: int  # video frame number since the session started
    picture: Picture  # what `image` and `yuv` read (a skipped frame shares the last one)
    audio: np.ndarray  # (640,) float32 at 16 kHz: the input this frame was made from
    controls: np.ndarray  # (N_CONTROLS,) the smoothed controls it was rendered with
    visemes: np.ndarray | None  # (N_VISEMES,) when the model predicts them
    rendered: bool  # False when the caller skipped rendering (image repeats the last one)
    input_audio: np.ndarray  # the same stretch of input as pushed: (n,) or (n, channels)
    input_rate: int  # Hz, the rate input_audio was pushed at

    @property
    def image(self) -> np.ndarray:
        """(size, size, 3) uint8 RGB, read-only; converted on first use when drawn on the GPU."""
        return self.picture.rgb

    @property
    def yuv(self) -> np.ndarray:
        """(size * 3 // 2, size) uint8 I420, read-only; converted on first use when drawn on the CPU."""
        return self.picture.yuv


class Engine:
    def __init__(self, avatar: Avatar, config: EngineConfig | None = None,
                 model: MotionModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.avatar = avatar
        self.motion = MotionStream(self.config, model)
        self.renderer = make_renderer(avatar, self.config)
        self._drawn = avatar.image.copy()  # the array the renderer last returned...
        self._picture = Picture(self._drawn, i420=False)  # ...and the frames' picture of it

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
        """Add input audio: int or float PCM, mono or (samples, channels), at 8 to 768 kHz."""
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
            self._picture = self._draw(motion.controls, motion.index)
        return Frame(index=motion.index, picture=self._picture, audio=motion.audio,
                     controls=motion.controls, visemes=motion.visemes, rendered=render,
                     input_audio=motion.input_audio, input_rate=motion.input_rate)

    def _draw(self, controls: np.ndarray, index: int) -> Picture:
        """This frame's picture; the last one again when the renderer returned its very array
        (an idle face), so its other form is not converted again."""
        changes = None
        if isinstance(self.renderer, Renderer):
            drawn, i420, changes = self.renderer.render(controls, index), False, self.renderer.changes
        else:  # the GPU: I420 straight from the device
            drawn, i420 = self.renderer.render_i420(controls, index), True
        if drawn is not self._drawn:
            self._drawn, self._picture = drawn, Picture(drawn, i420, changes)
        return self._picture

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


def make_renderer(avatar: Avatar, config: EngineConfig) -> "Renderer | DeviceRenderer":
    """The whole frame on the GPU (I420 out) when the engine's device resolved to one, else the
    CPU renderer (RGB out)."""
    settings = render_config(config)
    device = device_renderer(resolve_device(config.device), avatar, settings, config.seed)
    return device or Renderer(avatar, settings, seed=config.seed)
