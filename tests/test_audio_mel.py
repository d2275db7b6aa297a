"""AudioIn and MelStream: any file in, 16 kHz mono float32; incremental mel equals whole-file mel."""

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from lipstream.engine.audio import AudioIn, load_audio, rms, to_float_mono
from lipstream.engine.constants import HOP_SAMPLES, N_MELS, SAMPLE_RATE
from lipstream.engine.mel import SILENCE_LOG_MEL, MelStream, log_mel
from lipstream.errors import AudioError


def _chirp(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)


def _encode(path: Path, codec: str, rate: int, layout: str, fmt: str, audio: np.ndarray) -> Path:
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        planar = np.tile(audio, (channels, 1))
        if fmt.endswith("p"):  # planar: one row per channel
            data = planar.astype(np.float32)
        elif fmt == "s16":
            data = (planar.T.reshape(1, -1) * 32767).astype(np.int16)
        else:
            data = planar.T.reshape(1, -1).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    "name, codec, rate, layout, fmt",
    [
        ("a.wav", "pcm_s16le", 44_100, "stereo", "s16"),
        ("b.wav", "pcm_f32le", 48_000, "mono", "flt"),
        ("c.flac", "flac", 22_050, "mono", "s16"),
        ("d.mp3", "libmp3lame", 44_100, "stereo", "flt"),
        ("e.m4a", "aac", 48_000, "stereo", "flt"),
        ("f.ogg", "libopus", 48_000, "mono", "flt"),
    ],
)
def test_load_audio_any_format(tmp_path: Path, name: str, codec: str, rate: int, layout: str,
                               fmt: str) -> None:
    seconds = 1.5
    src = _chirp(seconds, rate)
    if fmt == "flt" and codec in ("libmp3lame", "aac", "libopus"):
        fmt = "fltp" if codec != "libopus" else "flt"
    path = _encode(tmp_path / name, codec, rate, layout, fmt, src)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # lossy codecs add priming; the length must still be the input's within 60 ms
    assert abs(audio.size / SAMPLE_RATE - seconds) < 0.06
    ref = _chirp(seconds, SAMPLE_RATE)
    n = min(ref.size, audio.size)
    lags = range(-1200, 1200, 8)
    best = max(np.dot(ref[2000 : n - 2000], np.roll(audio[:n], -lag)[2000 : n - 2000]) for lag in lags)
    assert best / np.dot(ref[2000 : n - 2000], ref[2000 : n - 2000]) > 0.8  # same signal came out


@pytest.mark.parametrize("second", [(48_000, "mono"), (44_100, "stereo")])
def test_files_joined_from_different_formats_decode_whole(tmp_path: Path, second: tuple[int, str]) -> None:
    """MP3s joined byte by byte (how people join them) change rate or layout midway: a resampler
    is built for one, and the second part raised 'Frame does not match AudioResampler setup'; and
    the decoder refuses the packet at the seam (ffmpeg passes over it)."""
    parts = [_encode(tmp_path / f"{k}.mp3", "libmp3lame", rate, layout, "flt",
                     _chirp(1.0, rate)) for k, (rate, layout) in enumerate([(44_100, "mono"), second])]
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    audio = load_audio(joined)
    assert abs(audio.size / SAMPLE_RATE - 2.0) < 0.12  # each part's MP3 priming and padding aside
    assert rms(audio[-SAMPLE_RATE // 2 :]) > 0.1  # the second part is there, and not silence


def test_bad_audio_files(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot"):
        load_audio(junk)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16_000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)


def test_int_and_multichannel_pcm_to_float_mono() -> None:
    stereo = np.array([[32767, -32768], [16384, 16384]], dtype=np.int16)
    mono = to_float_mono(stereo)
    np.testing.assert_allclose(mono, [(32767 - 32768) / 2 / 32768, 0.5], atol=1e-6)
    assert to_float_mono(np.array([128, 255], dtype=np.uint8))[0] == 0.0


def test_audio_in_resamples_chunks_like_a_whole_stream() -> None:
    src = _chirp(1.0, 48_000)
    whole = AudioIn()
    ref = np.concatenate([whole.push(src, 48_000), whole.flush()])
    chunked = AudioIn()
    parts = [chunked.push(src[i : i + 441], 48_000) for i in range(0, src.size, 441)]
    out = np.concatenate([*parts, chunked.flush()])
    assert abs(out.size - ref.size) <= 1
    n = min(out.size, ref.size)
    np.testing.assert_allclose(out[:n], ref[:n], atol=1e-4)
    assert abs(ref.size - SAMPLE_RATE) <= 16


def test_incremental_mel_equals_whole_file(speech_wav: Path) -> None:
    audio = load_audio(speech_wav)
    whole = log_mel(audio)
    assert whole.shape == (audio.size // HOP_SAMPLES, N_MELS)
    for chunk in (1, 7, 320, 16_000):
        stream = MelStream()
        for i in range(0, audio.size, chunk):
            stream.push(audio[i : i + chunk])
        assert stream.n_frames == whole.shape[0]
        np.testing.assert_allclose(stream.window(0, stream.n_frames), whole, atol=1e-5)


def test_mel_window_before_start_is_silence() -> None:
    stream = MelStream()
    stream.push(np.random.default_rng(0).normal(0, 0.1, HOP_SAMPLES * 3).astype(np.float32))
    window = stream.window(-5, 3)
    assert np.all(window[:5] == SILENCE_LOG_MEL) and np.all(window[5:] > SILENCE_LOG_MEL)
    with pytest.raises(ValueError):
        stream.window(0, 4)
    stream.discard_before(2)
    with pytest.raises(ValueError, match="dropped"):
        stream.window(1, 3)
    np.testing.assert_array_equal(stream.window(2, 3), window[7:])


def test_speechlike_audio_moves_the_shipped_models_mouth_as_speech_does() -> None:
    """The benchmarks and the start-up session estimate time the engine on `speechlike`: it must open
    the mouth as speech does, or they time a face that barely moves (plain harmonics without vowel
    formants: the aperture's 95th percentile 0.15, never past 0.2)."""
    from lipstream.engine.audio import speechlike
    from lipstream.engine.config import EngineConfig
    from lipstream.engine.motion import load_motion_model, shipped_model_path
    from lipstream.engine.stream import MotionStream
    from lipstream.training.calibrate import aperture

    if shipped_model_path() is None:
        pytest.skip("no shipped motion model in this install")
    audio = speechlike(6.0, seed=1)
    np.testing.assert_array_equal(audio, speechlike(6.0, seed=1))
    stream = MotionStream(EngineConfig(), model=load_motion_model(None))
    stream.push_audio(audio, SAMPLE_RATE)
    stream.finish()
    opening = aperture(np.array([f.controls for f in stream.frames()]))  # the lip gap
    assert np.percentile(opening, 95) > 0.3, np.percentile(opening, [50, 95])
    assert 0.15 < np.mean(opening > 0.2) < 0.6  # open on syllables, shut in between and in pauses
