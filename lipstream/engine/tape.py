"""InputTape: the input audio exactly as it was pushed, cut at video-frame boundaries.

The model hears 16 kHz mono, but a caller that re-emits the avatar's audio (a voice agent's 24 or
48 kHz TTS) wants back what it gave, bit for bit. At rate R, video frame n of a run of pushes at
that rate covers input samples [floor(n R / 25), floor((n + 1) R / 25)) of the run (R / 25 whole
at every common rate: 960 at 24 kHz, 1764 at 44.1 kHz). The rate, dtype and channel count may
change only where a frame begins (after `Engine.end_segment()` or `clear()`).
"""

from collections import deque

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, VIDEO_FPS
from lipstream.errors import AudioError


def frame_boundary(frame: int, rate: int) -> int:
    """First input sample of `frame` (counted from the start of a run at `rate`)."""
    return frame * rate // VIDEO_FPS


class InputTape:
    def __init__(self) -> None:
        self.rate: int | None = None
        self._frames: deque[tuple[np.ndarray, int]] = deque()  # (samples, rate) not yet taken, oldest first
        self._partial: list[np.ndarray] = []  # samples of the frame being filled
        self._partial_size = 0
        self._run_frames = 0  # frames completed since the rate was set: where the next boundary is
        self.frames_cut = 0  # whole frames made since the start (or since clear(start)), taken or not

    def check(self, pcm: np.ndarray, rate: int) -> None:
        """Raise AudioError if `pcm` cannot continue the frame being filled (before anything changes)."""
        if rate != self.rate and self._partial_size:
            raise AudioError(f"the sample rate changed from {self.rate} to {rate} Hz within a "
                             "segment: call end_segment() before changing it")
        if self._partial:
            first = self._partial[0]
            if (pcm.dtype, pcm.shape[1:]) != (first.dtype, first.shape[1:]):
                raise AudioError(f"audio changed from {first.dtype} {first.shape[1:]} to {pcm.dtype} "
                                 f"{pcm.shape[1:]} within a video frame: keep one format per segment")

    def push(self, pcm: np.ndarray, rate: int) -> None:
        """Keep `pcm` ((samples,) or (samples, channels), any dtype) as pushed at `rate` Hz."""
        self.check(pcm, rate)
        if rate != self.rate:
            self.rate, self._run_frames = rate, 0
        if pcm.shape[0]:
            self._partial.append(pcm.copy())  # a copy: capture callbacks refill the buffer they pushed
            self._partial_size += pcm.shape[0]
            self._cut()

    def pad_to(self, frames: int) -> None:
        """Fill with silence until `frames` whole frames have been made. Before any push, at 16 kHz:
        the silence of an idle start is in the frames' timeline, and the first turn's audio must
        come after it on the tape too, or each frame of that turn carries a later frame's audio."""
        if self.rate is None:
            self.rate = SAMPLE_RATE
        if self._partial_size and self.frames_cut < frames:
            self._append_silence(self._frame_size() - self._partial_size)
        while self.frames_cut < frames:
            self._append_silence(self._frame_size())

    def take(self) -> tuple[np.ndarray, int]:
        """The oldest whole frame and its rate (silence if the input has not filled it: not expected)."""
        if self._frames:
            return self._frames.popleft()
        rate = self.rate or SAMPLE_RATE
        return np.zeros(frame_boundary(1, rate), np.float32), rate

    def clear(self, start: int) -> None:
        """Forget everything not yet taken; the next push starts frame `start`."""
        self._frames.clear()
        self._partial, self._partial_size, self._run_frames = [], 0, 0
        self.frames_cut = start

    def _frame_size(self) -> int:
        assert self.rate is not None
        return frame_boundary(self._run_frames + 1, self.rate) - frame_boundary(self._run_frames, self.rate)

    def _append_silence(self, n: int) -> None:
        like = self._partial[-1] if self._partial else (self._frames[-1][0] if self._frames else None)
        shape = (n,) if like is None or like.ndim == 1 else (n, like.shape[1])
        dtype = np.float32 if like is None else like.dtype
        self._partial.append(np.zeros(shape, dtype))
        self._partial_size += n
        self._cut()

    def _cut(self) -> None:
        """Move every whole frame from the partial buffer to the frame queue."""
        assert self.rate is not None  # set by the first push
        while self._partial_size >= (size := self._frame_size()):
            joined = np.concatenate(self._partial) if len(self._partial) > 1 else self._partial[0]
            self._frames.append((joined[:size], self.rate))
            rest = joined[size:]
            self._partial = [rest] if rest.shape[0] else []
            self._partial_size = rest.shape[0]
            self._run_frames += 1
            self.frames_cut += 1
