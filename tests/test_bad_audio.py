"""Audio a careless caller pushes: refused with an AudioError that names the fix, and the stream
it was pushed to goes on unharmed; or, where the intent is plain (samples past full scale), used.
And audio pushed from a buffer the caller then reuses, as capture callbacks do."""

import struct
from pathlib import Path

import numpy as np
import pytest

from lipstream import SAMPLE_RATE, VIDEO_FPS, MotionStream
from lipstream.engine.audio import AudioFile, load_audio
from lipstream.errors import AudioError
from tests.conftest import float_wav

SECOND = np.zeros(SAMPLE_RATE, np.float32)


@pytest.fixture
def stream() -> MotionStream:
    return MotionStream()


def _one_good_second(stream: MotionStream) -> None:
    """The stream still makes a second of sane frames."""
    stream.push_audio(SECOND, SAMPLE_RATE)
    stream.end_segment()
    frames = stream.frames()
    assert len(frames) >= VIDEO_FPS
    assert all(np.isfinite(f.controls).all() and np.isfinite(f.audio).all() for f in frames)


INT16_BYTES = (np.sin(np.arange(SAMPLE_RATE) / 5) * 8000).astype(np.int16).tobytes()  # as a socket hands them


@pytest.mark.parametrize(("pcm", "rate", "expected"), [
    (INT16_BYTES, SAMPLE_RATE, r"raw bytes.*np\.frombuffer"),
    (bytearray(INT16_BYTES), SAMPLE_RATE, r"raw bytes.*np\.frombuffer"),  # was read as 8-bit PCM: noise
    (memoryview(INT16_BYTES), SAMPLE_RATE, r"raw bytes.*np\.frombuffer"),
    (np.full(SAMPLE_RATE, np.nan, np.float32), SAMPLE_RATE, "NaN or infinite"),
    (np.r_[SECOND, np.inf].astype(np.float32), SAMPLE_RATE, "NaN or infinite"),
    (np.full(48_000, -np.inf), 48_000, "NaN or infinite"),
    (np.zeros((2, SAMPLE_RATE), np.float32), SAMPLE_RATE, r"\(channels, samples\)"),  # planar, as PyAV gives
    (np.zeros((SAMPLE_RATE, 0), np.float32), SAMPLE_RATE, "channels"),
    (SECOND, 7, "sample rate"),
    (SECOND, True, "sample rate"),
    (SECOND, 10**12, "sample rate"),
    (SECOND, 22_050.5, "whole number"),
    (SECOND, "16000", "whole number"),
    (SECOND, None, "whole number"),
])
def test_unusable_pushes_are_refused_and_the_stream_goes_on(
        stream: MotionStream, pcm: np.ndarray, rate: int, expected: str) -> None:
    with pytest.raises(AudioError, match=expected):
        stream.push_audio(pcm, rate)
    _one_good_second(stream)


def test_a_whole_float_rate_is_taken_as_sounddevice_reports_it(stream: MotionStream) -> None:
    stream.push_audio(np.zeros(48_000, np.float32), 48_000.0)
    stream.end_segment()
    frames = stream.frames()
    assert len(frames) >= VIDEO_FPS
    assert all(type(f.input_rate) is int and f.input_rate == 48_000 for f in frames)


def test_samples_past_full_scale_are_clipped_not_turned_to_nan(stream: MotionStream) -> None:
    stream.push_audio(np.full(SAMPLE_RATE, 1e30, np.float32), SAMPLE_RATE)
    stream.end_segment()
    frames = stream.frames()
    assert all(np.isfinite(f.controls).all() for f in frames)
    assert max(float(np.abs(f.audio).max()) for f in frames) == 1.0


def test_input_audio_is_what_was_pushed_after_the_caller_reuses_its_buffer(stream: MotionStream) -> None:
    """Frames hand back the input as pushed, bit for bit (a voice agent plays it with the face):
    they held a view of the caller's array, so a refilled capture buffer changed them."""
    buffer = np.full(48_000, 1000, np.int16)  # one second at 48 kHz
    stream.push_audio(buffer, 48_000)
    buffer[:] = 0  # the caller's next chunk goes into the same buffer
    stream.end_segment()
    frames = stream.frames()
    assert np.array_equal(np.concatenate([f.input_audio for f in frames])[:48_000], np.full(48_000, 1000))


def test_a_float_wav_with_nan_samples_is_refused_by_name(tmp_path: Path) -> None:
    path = float_wav(tmp_path / "damaged.wav", np.r_[SECOND, np.nan, SECOND])
    with pytest.raises(AudioError, match="damaged.wav: audio has NaN or infinite"):
        load_audio(path)


def _wav_claiming(path: Path, rate_hz: int) -> Path:
    """One second of int16 samples under a header that says they were sampled at `rate_hz`."""
    samples = (np.sin(np.arange(SAMPLE_RATE) / 5) * 10_000).astype(np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate_hz, rate_hz * 2, 2, 16)  # PCM, mono, 16-bit
    data = b"data" + struct.pack("<I", len(samples)) + samples
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_a_file_rate_no_recording_has_is_refused_before_hours_of_render(tmp_path: Path) -> None:
    """A header saying 1 Hz made 16,000 samples 4.4 hours long: rendered frame by frame."""
    with pytest.raises(AudioError, match="r1.wav says it was sampled at 1 Hz"):
        AudioFile(_wav_claiming(tmp_path / "r1.wav", 1))
    assert AudioFile(_wav_claiming(tmp_path / "r8k.wav", 8_000)).duration_s == 2.0


def test_a_0_byte_file_is_called_empty(tmp_path: Path) -> None:
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="^audio file is empty: .*zero.wav$"):
        AudioFile(tmp_path / "zero.wav")
