"""Log-mel features, whole-file and incremental, with identical values.

Framing is causal: mel frame t covers the 25 ms that end with hop t, i.e. samples
[HOP*(t+1) - N_FFT, HOP*(t+1)), zeros before the stream starts. So frame t can be computed as
soon as hop t has arrived, and a stream never has to wait for future audio to finish a frame.
"""

from collections import deque
from functools import lru_cache

import numpy as np

from lipstream.engine.constants import HOP_SAMPLES, MEL_FRAMES_PER_VIDEO_FRAME, N_FFT, N_MELS, SAMPLE_RATE

LOG_FLOOR = 1e-10  # power floor before log10: silence maps to -10
SILENCE_LOG_MEL = float(np.log10(LOG_FLOOR))
HISTORY_SAMPLES = N_FFT - HOP_SAMPLES  # 240: samples of the previous hops each frame reuses


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear below 1 kHz, logarithmic above (as librosa's default).
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    mel[log_region] = min_log_hz / f_sp + np.log(hz[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    hz = mel * f_sp
    min_log_mel = min_log_hz / f_sp
    log_region = mel >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return hz


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) float32, Slaney-normalised triangles from 0 Hz to Nyquist."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(np.array([SAMPLE_RATE / 2.0]))[0], N_MELS + 2))
    lower = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann


def _frames_to_log_mel(frames: np.ndarray) -> np.ndarray:
    """(T, N_FFT) samples -> (T, N_MELS) log10 mel power."""
    spectrum = np.fft.rfft(frames * _window(), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel: np.ndarray = np.log10(np.maximum(power @ mel_filterbank(), LOG_FLOOR))
    return mel.astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whole-signal log-mel: (n,) float32 at 16 kHz -> (n // HOP, N_MELS) float32."""
    n_frames = audio.size // HOP_SAMPLES
    padded = np.concatenate([np.zeros(HISTORY_SAMPLES, np.float32), audio.astype(np.float32)])
    starts = np.arange(n_frames) * HOP_SAMPLES
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    return _frames_to_log_mel(frames)


class MelStream:
    """Incremental log-mel: each push computes only the hops it completes.

    Frames are computed one at a time, so values do not depend on how the audio was chunked.
    The reader says when it no longer needs old frames (`discard_before`), which bounds memory
    however long a session runs.
    """

    def __init__(self) -> None:
        self._tail = np.zeros(HISTORY_SAMPLES, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._frames: deque[np.ndarray] = deque()
        self.n_frames = 0  # mel frames computed since the start of the stream

    def push(self, audio: np.ndarray) -> int:
        """Add 16 kHz float32 samples; returns how many new mel frames they completed."""
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        n_new = self._pending.size // HOP_SAMPLES
        for i in range(n_new):
            hop = self._pending[i * HOP_SAMPLES : (i + 1) * HOP_SAMPLES]
            frame = np.concatenate([self._tail, hop])
            self._frames.append(_frames_to_log_mel(frame[None, :])[0])
            self._tail = frame[HOP_SAMPLES:]
        self._pending = self._pending[n_new * HOP_SAMPLES :]
        self.n_frames += n_new
        return n_new

    def discard_before(self, t: int) -> None:
        """Forget mel frames before frame t."""
        oldest = self.n_frames - len(self._frames)
        for _ in range(min(t - oldest, len(self._frames))):
            self._frames.popleft()

    def window(self, start: int, stop: int) -> np.ndarray:
        """Mel frames [start, stop) as (stop - start, N_MELS); frames before 0 are silence."""
        if stop > self.n_frames:
            raise ValueError(f"mel frame {stop - 1} not computed yet ({self.n_frames} so far)")
        oldest = self.n_frames - len(self._frames)
        if start < oldest and oldest > 0:
            raise ValueError(f"mel frame {start} already dropped (oldest kept: {oldest})")
        out = np.full((stop - start, N_MELS), SILENCE_LOG_MEL, np.float32)
        for t in range(max(start, 0), stop):
            out[t - start] = self._frames[t - oldest]
        return out


def video_frame_window(n: int, context_frames: int, lookahead_frames: int) -> tuple[int, int]:
    """Mel frames [start, stop) a motion model sees for video frame n.

    `context_frames` ends with the frame's own last hop; `lookahead_frames` follow it.
    """
    end_of_frame = MEL_FRAMES_PER_VIDEO_FRAME * (n + 1)
    return end_of_frame - context_frames, end_of_frame + lookahead_frames
