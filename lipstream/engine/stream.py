"""MotionStream: audio in, mouth controls and viseme probabilities out, one set per 40 ms video frame.

No photo and no renderer: the cheapest way to drive any other face (a Live2D or VRM model, a 3D
rig, a renderer in the viewer's browser). `Engine` is a MotionStream plus a renderer.

Frame n is made from input samples [640 n, 640 (n + 1)) at 16 kHz plus the model's lookahead, so it
can be made once sample 640 (n + 1) + lookahead has arrived; it carries exactly those samples (and
the same stretch of the input as it was pushed, at the caller's rate).

Threads: one producer (push_audio, end_segment, clear) and one consumer (pop), not concurrently.
"""

from dataclasses import dataclass

import numpy as np

from lipstream.engine.audio import AudioIn, as_samples, check_rate
from lipstream.engine.config import EngineConfig
from lipstream.engine.constants import HOP_SAMPLES, SAMPLES_PER_VIDEO_FRAME, VIDEO_PTS_PER_FRAME
from lipstream.engine.controls import MotionOutput, close_for_bilabials
from lipstream.engine.device import resolve_device
from lipstream.engine.mel import MelStream, video_frame_window
from lipstream.engine.motion import MotionModel, load_motion_model
from lipstream.engine.smoothing import ControlSmoother
from lipstream.engine.tape import InputTape


class FrameTimes:
    """A video frame's timestamps, from its index (Frame and MotionFrame share them)."""

    index: int

    @property
    def pts(self) -> int:
        """Video pts in the 90 kHz clock."""
        return self.index * VIDEO_PTS_PER_FRAME

    @property
    def audio_pts(self) -> int:
        """pts of the frame's audio in samples at 16 kHz."""
        return self.index * SAMPLES_PER_VIDEO_FRAME


@dataclass(frozen=True)
class MotionFrame(FrameTimes):
    index: int  # video frame number since the stream started
    audio: np.ndarray  # (640,) float32 at 16 kHz: the input this frame was made from
    input_audio: np.ndarray  # the same stretch as pushed: (n,) or (n, channels), at input_rate
    input_rate: int  # Hz, the rate `input_audio` was pushed at
    controls: np.ndarray  # (N_CONTROLS,) smoothed, in CONTROL_NAMES order, each in [0, 1]
    visemes: np.ndarray | None  # (N_VISEMES,) probabilities in VISEMES order, when the model has them


class MotionStream:
    # the input state, (re)set by _reset_input
    _audio_in: AudioIn
    _mel: MelStream
    _frame_base: int
    _received: int
    _audio: np.ndarray
    _audio_offset: int
    _frames_limit: int | None

    def __init__(self, config: EngineConfig | None = None, model: MotionModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model or load_motion_model(self.config.motion, self.config.lookahead_ms,
                                                resolve_device(self.config.device).runner)
        self._smoother = ControlSmoother(self.config.smoothing)
        self._tape = InputTape()
        self._next_index = 0  # next frame to hand out
        self._reset_input()

    @property
    def lookahead_samples(self) -> int:
        return self.model.lookahead_frames * HOP_SAMPLES

    @property
    def latency_samples(self) -> int:
        """How far behind its input a frame (and its audio) leaves: one frame + lookahead."""
        return SAMPLES_PER_VIDEO_FRAME + self.lookahead_samples

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Add input audio: int or float PCM, mono or (samples, channels), at 8 to 768 kHz."""
        pcm, sample_rate = as_samples(pcm), check_rate(sample_rate)  # a plain int on every frame
        self._tape.check(pcm, sample_rate)
        converted = self._audio_in.push(pcm, sample_rate)  # validates before anything is kept
        self._tape.push(pcm, sample_rate)
        self._frames_limit = None  # more audio after finish(): the stream goes on
        self._ingest(converted)

    def end_segment(self) -> None:
        """End of one turn: every frame with its audio becomes ready, the next push starts a new turn.

        The turn is padded with silence to a frame boundary plus the lookahead (whole frames), and
        that silence stays in the timeline: frames and their audio go on from there.
        """
        self._ingest(self._audio_in.flush())
        self._audio_in = AudioIn()
        self._frames_limit = None  # after finish(): its padding becomes frames, time goes on
        lookahead_frames = -(-self.lookahead_samples // SAMPLES_PER_VIDEO_FRAME)
        to_boundary = -self._received % SAMPLES_PER_VIDEO_FRAME
        self._ingest(np.zeros(to_boundary + lookahead_frames * SAMPLES_PER_VIDEO_FRAME, np.float32))
        self._tape.pad_to(self._frame_base + self._received // SAMPLES_PER_VIDEO_FRAME)

    def finish(self) -> None:
        """End of a file: like end_segment, but only frames that cover real audio are handed out
        (until more audio is pushed)."""
        self._ingest(self._audio_in.flush())
        self._audio_in = AudioIn()
        real_frames = -(-self._received // SAMPLES_PER_VIDEO_FRAME)
        self.end_segment()
        self._frames_limit = self._frame_base + real_frames

    def clear(self) -> None:
        """Drop input not yet turned into frames (barge-in). The frame count goes on; the mouth
        eases to rest from where it was."""
        self._reset_input()

    def ready(self) -> int:
        """How many frames can be made now."""
        available = self._frame_base + (self._received - self.lookahead_samples) // SAMPLES_PER_VIDEO_FRAME
        if self._frames_limit is not None:
            available = min(available, self._frames_limit)
        return max(available - self._next_index, 0)

    def pop(self) -> MotionFrame | None:
        """The next frame's controls, or None if its audio (and lookahead) has not all arrived."""
        window = self.next_window()
        if window is None:
            return None
        return self.complete(self.model.predict(window))

    def next_window(self) -> np.ndarray | None:
        """The next frame's mel window, (T, N_MELS), for the model; None until its audio is in.

        With `complete`, the two halves of `pop` around the model: `EngineGroup` runs the
        windows of many streams in one batch between them.
        """
        if self.ready() == 0:
            return None
        start, stop = video_frame_window(self._next_index - self._frame_base, self.model.context_frames,
                                         self.model.lookahead_frames)
        return self._mel.window(start, stop)

    def complete(self, output: MotionOutput) -> MotionFrame:
        """The next frame, from the model's output for `next_window()`."""
        if self.ready() == 0:
            raise RuntimeError("complete() without a window: call next_window() first")
        local = self._next_index - self._frame_base
        next_start, _ = video_frame_window(local + 1, self.model.context_frames, 0)
        self._mel.discard_before(next_start)
        start = local * SAMPLES_PER_VIDEO_FRAME - self._audio_offset
        input_audio, input_rate = self._tape.take()
        frame = MotionFrame(
            index=self._next_index,
            audio=self._audio[start : start + SAMPLES_PER_VIDEO_FRAME].copy(),
            input_audio=input_audio,
            input_rate=input_rate,
            controls=self._smoother.step(close_for_bilabials(output, self.config.bilabial_closure)),
            visemes=output.visemes,
        )
        self._next_index += 1
        self._drop_consumed_audio(local + 1)
        return frame

    def frames(self) -> list[MotionFrame]:
        """Every frame that can be made now."""
        out = []
        while (frame := self.pop()) is not None:
            out.append(frame)
        return out

    def _reset_input(self) -> None:
        self._audio_in = AudioIn()
        self._mel = MelStream()
        self._tape.clear(self._next_index)
        self._frame_base = self._next_index  # input sample 0 belongs to this frame
        self._received = 0  # 16 kHz samples received since the base
        self._audio = np.zeros(0, np.float32)  # received samples not yet handed out
        self._audio_offset = 0  # sample index (since the base) of self._audio[0]
        self._frames_limit = None  # set by finish(): frames past it are padding

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
