"""Engine: one session's audio in, frames out, each frame paired with the audio it was made from.

Frame n is made from input samples [640 n, 640 (n + 1)) plus the motion model's lookahead, so it
can be made once sample 640 (n + 1) + lookahead has arrived. The audio chunk handed out with
frame n is exactly those 640 samples: a sink that plays them with the frame plays sound and
picture in sync, `latency_samples` behind the input.
"""

from dataclasses import dataclass, field

import numpy as np

from lipstream.engine.audio import AudioIn
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import (
    HOP_SAMPLES,
    SAMPLES_PER_VIDEO_FRAME,
    VIDEO_PTS_PER_FRAME,
)
from lipstream.engine.controls import MotionOutput, close_for_bilabials
from lipstream.engine.mel import MelStream, video_frame_window
from lipstream.engine.motion import MotionModel, load_motion_model
from lipstream.engine.render import RenderConfig, Renderer
from lipstream.engine.smoothing import ControlSmoother, SmoothingConfig


@dataclass(frozen=True)
class EngineConfig:
    seed: int = 0  # drives blinks and head motion: same seed, same inputs -> same frames
    motion: str | None = None  # None: the shipped model; "baseline"; or a path to an .onnx
    lookahead_ms: int | None = None  # the baseline's lookahead; a trained model brings its own
    bilabial_closure: float = 2.0  # gain on the viseme head's /p b m/ belief closing the lips (0: off)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    render: RenderConfig = field(default_factory=RenderConfig)


@dataclass(frozen=True)
class Frame:
    index: int  # video frame number since the session started
    image: np.ndarray  # (size, size, 3) uint8 RGB
    audio: np.ndarray  # (640,) float32 at 16 kHz: the input this frame was made from
    controls: np.ndarray  # (N_CONTROLS,) the smoothed controls it was rendered with
    visemes: np.ndarray | None  # (N_VISEMES,) when the model predicts them
    rendered: bool  # False when the caller skipped rendering (image repeats the last one)

    @property
    def pts(self) -> int:
        """Video pts in the 90 kHz clock."""
        return self.index * VIDEO_PTS_PER_FRAME

    @property
    def audio_pts(self) -> int:
        """pts of `audio` in samples at 16 kHz."""
        return self.index * SAMPLES_PER_VIDEO_FRAME


class Engine:
    def __init__(self, avatar: Avatar, config: EngineConfig | None = None,
                 model: MotionModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.avatar = avatar
        self.model = model or load_motion_model(self.config.motion, self.config.lookahead_ms)
        self.renderer = Renderer(avatar, self.config.render, seed=self.config.seed)
        self._smoother = ControlSmoother(self.config.smoothing)
        self._next_index = 0  # next frame to hand out
        self._last_image = avatar.image
        self._frames_limit: int | None = None  # set by finish(): the last frame of a file
        self._reset_input()

    @property
    def lookahead_samples(self) -> int:
        return self.model.lookahead_frames * HOP_SAMPLES

    @property
    def latency_samples(self) -> int:
        """How far behind its input a frame (and its audio) leaves: one frame + lookahead."""
        return SAMPLES_PER_VIDEO_FRAME + self.lookahead_samples

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Add input audio: int or float PCM, mono or (samples, channels), any rate."""
        self._ingest(self._audio_in.push(pcm, sample_rate))

    def finish(self) -> None:
        """End of input: pad with silence so every frame that covers real audio can be made."""
        self._ingest(self._audio_in.flush())
        received = self._frame_base * SAMPLES_PER_VIDEO_FRAME + self._received
        frames_needed = -(-received // SAMPLES_PER_VIDEO_FRAME)
        needed = (frames_needed - self._frame_base) * SAMPLES_PER_VIDEO_FRAME + self.lookahead_samples
        self._ingest(np.zeros(max(needed - self._received, 0), np.float32))
        self._frames_limit = frames_needed

    def clear(self) -> None:
        """Drop input not yet turned into frames (e.g. the user interrupted the speech).

        The frame count and the idle life go on; the mouth eases to rest from where it was.
        """
        self._reset_input()

    def ready(self) -> int:
        """How many frames can be made now."""
        local = self._next_index - self._frame_base
        available = (self._received - self.lookahead_samples) // SAMPLES_PER_VIDEO_FRAME
        if self._frames_limit is not None:
            available = min(available, self._frames_limit - self._frame_base)
        return max(available - local, 0)

    def pop_frame(self, render: bool = True) -> Frame | None:
        """The next frame, or None if its audio has not all arrived.

        With render=False the controls still advance but the image repeats the last one: a
        caller that has fallen behind stays in sync by skipping work, not by queueing it.
        """
        if self.ready() == 0:
            return None
        local = self._next_index - self._frame_base
        output = self._predict(local)
        controls = self._smoother.step(close_for_bilabials(output, self.config.bilabial_closure))
        if render:
            self._last_image = self.renderer.render(controls, self._next_index)
        start = local * SAMPLES_PER_VIDEO_FRAME - self._audio_offset
        frame = Frame(
            index=self._next_index,
            image=self._last_image,
            audio=self._audio[start : start + SAMPLES_PER_VIDEO_FRAME].copy(),
            controls=controls,
            visemes=output.visemes,
            rendered=render,
        )
        self._next_index += 1
        self._drop_consumed_audio(local + 1)
        return frame

    def frames(self) -> list[Frame]:
        """Every frame that can be made now, rendered."""
        out = []
        while (frame := self.pop_frame()) is not None:
            out.append(frame)
        return out

    def _predict(self, local: int) -> MotionOutput:
        start, stop = video_frame_window(local, self.model.context_frames, self.model.lookahead_frames)
        output = self.model.predict(self._mel.window(start, stop))
        next_start, _ = video_frame_window(local + 1, self.model.context_frames, 0)
        self._mel.discard_before(next_start)
        return output

    def _reset_input(self) -> None:
        self._audio_in = AudioIn()
        self._mel = MelStream()
        self._frame_base = self._next_index  # input sample 0 belongs to this frame
        self._received = 0  # 16 kHz samples received since the base
        self._audio = np.zeros(0, np.float32)  # received samples not yet handed out
        self._audio_offset = 0  # sample index (since the base) of self._audio[0]
        self._frames_limit = None

    def _ingest(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self._mel.push(audio)
        self._audio = np.concatenate([self._audio, audio])
        self._received += audio.size

    def _drop_consumed_audio(self, frames_done: int) -> None:
        consumed = frames_done * SAMPLES_PER_VIDEO_FRAME - self._audio_offset
        self._audio = self._audio[consumed:]
        self._audio_offset += consumed
