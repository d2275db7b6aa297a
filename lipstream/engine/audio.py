"""AudioIn: any decodable file or pushed PCM chunks -> 16 kHz mono float32."""

import itertools
import logging
import operator
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.inputfile import check_input_file
from lipstream.errors import AudioError

log = logging.getLogger(__name__)
MIN_RATE_HZ = 8_000  # telephone speech: below it the sounds that shape the mouth are gone
MAX_RATE_HZ = 768_000  # the highest rate audio interfaces offer
MAX_CHANNELS = 32  # more is a (channels, samples) array, as PyAV's to_ndarray gives, not transposed


def check_rate(sample_rate: int) -> int:
    """`sample_rate` as an int of Hz, or AudioError: a rate the engine cannot resample from.

    A float that is whole passes (sounddevice reports its rates as 48000.0)."""
    whole = isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer()
    try:
        rate = int(sample_rate) if whole else operator.index(sample_rate)
    except TypeError:
        raise AudioError(f"sample rate must be a whole number of Hz, got {sample_rate!r}") from None
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise AudioError(f"sample rate {sample_rate!r} Hz is out of range: give {MIN_RATE_HZ} to "
                         f"{MAX_RATE_HZ} Hz, the rate the audio was recorded at")
    return rate


def as_samples(pcm: np.ndarray) -> np.ndarray:
    """The array of samples a push holds; raw bytes are refused: numpy would read them as 8-bit."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        raise AudioError("audio is raw bytes: hand over samples, e.g. np.frombuffer(data, np.int16) "
                         "for 16-bit PCM")
    return np.asarray(pcm)


def to_float_mono(pcm: np.ndarray) -> np.ndarray:
    """int or float PCM, shape (n,) or (n, channels) -> (n,) float32 in [-1, 1].

    Float samples past full scale are clipped; NaN or infinite ones are refused (AudioError).
    """
    pcm = as_samples(pcm)
    _check_shape(pcm)
    if pcm.dtype.kind == "i":
        scaled = pcm.astype(np.float64) / -float(np.iinfo(pcm.dtype).min)
    elif pcm.dtype.kind == "u":  # unsigned PCM is centred on half its range
        half = 2.0 ** (pcm.dtype.itemsize * 8 - 1)
        scaled = (pcm.astype(np.float64) - half) / half
    elif pcm.dtype.kind == "f":
        if not np.isfinite(pcm).all():
            raise AudioError("audio has NaN or infinite samples (damaged, or not audio): "
                             "replace them with silence")
        scaled = np.clip(pcm, -1.0, 1.0)
    else:
        raise AudioError(f"audio samples must be integers or floats, got {pcm.dtype}")
    mono = scaled.mean(axis=1) if scaled.ndim == 2 else scaled
    return np.asarray(mono, dtype=np.float32)


def _check_shape(pcm: np.ndarray) -> None:
    if pcm.ndim not in (1, 2):
        raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {pcm.shape}")
    if pcm.ndim == 2 and not 1 <= pcm.shape[1] <= MAX_CHANNELS:
        raise AudioError(f"audio of shape {pcm.shape} has {pcm.shape[1]} channels: give (samples, "
                         f"channels) with 1 to {MAX_CHANNELS} channels (a (channels, samples) array: "
                         "pass its .T)")


# Vowel formants F1-F3 (Hz; adult speaker averages: a, e, i, o, u) and their bandwidths: a buzz at the
# voice's pitch, shaped by the vowel's resonances, is what the motion model hears as a vowel. Without
# them (plain harmonics) the shipped model never opened the mouth past 0.2 (95th percentile 0.15).
VOWEL_FORMANTS_HZ = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410),
                     (300, 870, 2240))
FORMANT_BANDWIDTHS_HZ = (90, 110, 170)
SYLLABLE_RATE_HZ = 3.5
PITCH_HZ = 100.0  # a low voice: the model opened least on higher synthetic buzzes (0.14 at 200 Hz)
HARMONICS = 30  # up to ~3.6 kHz at the pitch's top


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllables at 3.5 Hz, each a vowel drawn by `seed` (a pitch-gliding buzz shaped by the vowel's
    formants), and pauses: audio that keeps the mouth moving as speech does (open past 0.2 on a fifth
    to two fifths of the frames), for timing the engine as speech drives it. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    start = rng.uniform(0, 2 * np.pi)  # the syllables' phase
    syllable = np.floor(SYLLABLE_RATE_HZ * t + start / (2 * np.pi)).astype(np.int64)
    vowels = rng.integers(0, len(VOWEL_FORMANTS_HZ), int(syllable.max(initial=0)) + 1)
    formants = np.asarray(VOWEL_FORMANTS_HZ, np.float64)[vowels][syllable]  # (n, 3)
    f0 = PITCH_HZ + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = np.zeros(t.size)
    for k in range(1, HARMONICS + 1):
        gain = sum(1.0 / np.sqrt(1.0 + ((k * f0 - formants[:, j]) / bandwidth) ** 2)
                   for j, bandwidth in enumerate(FORMANT_BANDWIDTHS_HZ))
        voice += gain * np.sin(k * phase) / np.sqrt(k)
    envelope = np.clip(np.sin(2 * np.pi * SYLLABLE_RATE_HZ * t + start), 0, None)
    envelope *= (np.sin(2 * np.pi * 0.3 * t) > -0.5)  # pauses
    shaped = voice * envelope
    peak = float(np.max(np.abs(shaped), initial=0.0))
    out: np.ndarray = (0.3 * shaped / peak if peak > 0 else shaped).astype(np.float32)
    return out


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
        sample_rate = check_rate(sample_rate)
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
        check_input_file(self.path, "audio file", AudioError)
        if self.path.stat().st_size == 0:  # FFmpeg would say "Invalid data", as of a damaged file
            raise AudioError(f"audio file is empty: {self.path}")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise AudioError(f"cannot read audio from {self.path}: {exc}") from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioError(f"no audio stream in {self.path}: give a wav, mp3, m4a, ogg or flac file")
        self._check_rate()
        self.duration_s = self._duration_s()
        self.skipped_packets = 0  # refused by the decoder, and passed over

    def _check_rate(self) -> None:
        """The range pushed audio must keep: a header claiming 1 Hz would stretch a second to hours."""
        rate = self._container.streams.audio[0].rate
        if not rate:  # the header does not say; the decoder will
            return
        try:
            check_rate(rate)
        except AudioError:
            self._container.close()
            raise AudioError(f"{self.path} says it was sampled at {rate} Hz, outside the {MIN_RATE_HZ} to "
                             f"{MAX_RATE_HZ} Hz of real recordings: its header is damaged") from None

    def _duration_s(self) -> float | None:
        """From the container's header, when it says (a raw stream may not)."""
        stream = self._container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        duration_us = self._container.duration  # in av.time_base units (microseconds)
        return None if duration_us is None else duration_us / av.time_base

    def chunks(self) -> Iterator[np.ndarray]:
        """The decoded audio, one resampled packet at a time; raises AudioError if it is empty."""
        total = 0
        with self._container:
            for chunk in self._decoded():
                total += chunk.size
                yield chunk
        if total == 0 and self.skipped_packets:
            raise AudioError(f"cannot decode audio in {self.path}: the decoder refused all "
                             f"{self.skipped_packets} packets (a damaged file?)")
        if total == 0:
            raise AudioError(f"audio file is empty: {self.path}")
        if self.skipped_packets:
            log.warning("%s: passed over %d packets the decoder refused", self.path, self.skipped_packets)

    def _decoded(self) -> Iterator[np.ndarray]:
        """Resampled packets, checked and clipped as pushed PCM is (a float file can hold NaN)."""
        try:
            # A resampler takes one format: files joined byte by byte (MP3s, ADTS AAC) change midway
            for _, run in itertools.groupby(self._frames(), key=_setup):
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                for frame in itertools.chain(run, [None]):  # None: the resampler's tail
                    for resampled in resampler.resample(frame):
                        yield to_float_mono(resampled.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            raise AudioError(f"cannot decode audio in {self.path}: {exc}") from None
        except AudioError as exc:
            raise AudioError(f"cannot use the audio in {self.path}: {exc}") from None

    def _frames(self) -> Iterator[av.AudioFrame]:
        """The decoded frames. A packet the decoder refuses is passed over, as ffmpeg does: MP3s
        joined byte by byte carry one at the seam, and a file damaged in one place still plays."""
        for packet in self._container.demux(self._container.streams.audio[0]):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self.skipped_packets += 1
                continue
            yield from frames


def _setup(frame: av.AudioFrame) -> tuple[str, str, int]:
    """What a resampler is built for."""
    return frame.format.name, frame.layout.name, frame.sample_rate


def load_audio(path: str | Path) -> np.ndarray:
    """Decode any file PyAV can read -> 16 kHz mono float32. Raises AudioError with the reason."""
    return np.concatenate(list(AudioFile(path).chunks()))
