"""AudioIn: any decodable file or pushed PCM chunks -> 16 kHz mono float32."""

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import AudioError


def to_float_mono(pcm: np.ndarray) -> np.ndarray:
    """int or float PCM, shape (n,) or (n, channels) -> (n,) float32 in [-1, 1]."""
    pcm = np.asarray(pcm)
    if pcm.ndim not in (1, 2):
        raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {pcm.shape}")
    if pcm.dtype.kind == "i":
        scaled = pcm.astype(np.float64) / -float(np.iinfo(pcm.dtype).min)
    elif pcm.dtype.kind == "u":  # unsigned PCM is centred on half its range
        half = 2.0 ** (pcm.dtype.itemsize * 8 - 1)
        scaled = (pcm.astype(np.float64) - half) / half
    elif pcm.dtype.kind == "f":
        scaled = pcm
    else:
        raise AudioError(f"audio samples must be integers or floats, got {pcm.dtype}")
    mono = scaled.mean(axis=1) if scaled.ndim == 2 else scaled
    return np.asarray(mono, dtype=np.float32)


def rms(audio: np.ndarray) -> float:
    """Root mean square (0 for an empty array)."""
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0


class AudioIn:
    """Resamples pushed chunks of any rate to 16 kHz mono float32.

    The same resampler state carries across pushes, so a stream cut into any chunk sizes comes
    out the same as the whole stream (at 16 kHz input it passes through untouched).
    """

    def __init__(self) -> None:
        self._rate: int | None = None
        self._resampler: av.AudioResampler | None = None
        self._pts = 0

    def push(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        if sample_rate <= 0:
            raise AudioError(f"sample rate must be positive, got {sample_rate}")
        mono = to_float_mono(pcm)
        if sample_rate == SAMPLE_RATE:
            return mono
        if self._rate != sample_rate:
            self._rate = sample_rate
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self._pts = 0
        return self._resample(mono, sample_rate)

    def flush(self) -> np.ndarray:
        """The resampler's tail, at the end of a stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(None)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def _resample(self, mono: np.ndarray, rate: int) -> np.ndarray:
        assert self._resampler is not None
        if mono.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = self._pts
        self._pts += mono.size
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


class AudioFile:
    """A file PyAV can read, decoded incrementally to 16 kHz mono float32 chunks.

    Opening checks the file (so a bad one fails before slow work); `chunks()` decodes as it is
    iterated, so memory does not grow with the file's length. Raises AudioError with the reason.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(f"audio file not found: {self.path}")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise AudioError(f"cannot read audio from {self.path}: {exc}") from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioError(f"no audio stream in {self.path}: give a wav, mp3, m4a, ogg or flac file")
        self.duration_s = self._duration_s()

    def _duration_s(self) -> float | None:
        """From the container's header, when it says (a raw stream may not)."""
        stream = self._container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        duration_us = self._container.duration  # in av.time_base units (microseconds)
        return None if duration_us is None else duration_us / av.time_base

    def chunks(self) -> Iterator[np.ndarray]:
        """The decoded audio, one resampled packet at a time; raises AudioError if it is empty."""
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        total = 0
        with self._container:
            try:
                for frame in self._container.decode(audio=0):
                    for chunk in _to_chunks(resampler.resample(frame)):
                        total += chunk.size
                        yield chunk
            except av.FFmpegError as exc:
                raise AudioError(f"cannot decode audio in {self.path}: {exc}") from None
            for chunk in _to_chunks(resampler.resample(None)):
                total += chunk.size
                yield chunk
        if total == 0:
            raise AudioError(f"audio file is empty: {self.path}")


def _to_chunks(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def load_audio(path: str | Path) -> np.ndarray:
    """Decode any file PyAV can read -> 16 kHz mono float32. Raises AudioError with the reason."""
    return np.concatenate(list(AudioFile(path).chunks()))
