"""`lipstream render` end to end, as a user runs it: files in, an mp4 out, or one clear error line."""

import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.training.evaluate import MouthMeter, read_video_frames
from tests.conftest import espeak_wav, float_wav

SILENCE_S = 1.0


def lipstream(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lipstream", *args], capture_output=True, text=True,
                          timeout=300)


def _write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def vowel_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Silence, a loud sustained "aah", silence: the mouth must be shut, open, shut."""
    folder = tmp_path_factory.mktemp("vowel")
    spoken = load_audio(espeak_wav(folder / "ah.wav", "aaaaaaaah", "-s", "60", "-a", "200"))
    spoken = spoken / max(np.abs(spoken).max(), 1e-6) * 0.8
    silence = np.zeros(int(SILENCE_S * SAMPLE_RATE), np.float32)
    return _write_wav(folder / "vowel.wav", np.concatenate([silence, spoken, silence]))


@pytest.fixture(scope="module")
def rendered(vowel_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render") / "out.mp4"
    result = lipstream("render", "--audio", str(vowel_wav), "--out", str(out), "--size", "384",
                       "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_mp4_has_the_right_frames_and_audio(rendered: Path, vowel_wav: Path) -> None:
    duration = load_audio(vowel_wav).size / SAMPLE_RATE
    frames, fps = read_video_frames(str(rendered))
    assert fps == 25
    assert abs(len(frames) - np.ceil(duration * 25)) <= 1
    assert frames[0].shape == (384, 384, 3)
    with av.open(str(rendered)) as container:
        audio_stream = container.streams.audio[0]
        decoded = sum(f.samples for f in container.decode(audio_stream))
        # the stream's duration is what players show: AAC's priming is cut by the edit list
        assert audio_stream.duration is not None and audio_stream.time_base is not None
        audio_s = float(audio_stream.duration * audio_stream.time_base)
    assert decoded >= audio_s * audio_stream.rate  # the audio decodes, all of it
    assert abs(audio_s - duration) <= 0.040


def test_mouth_shut_in_silence_and_open_on_the_vowel(rendered: Path, vowel_wav: Path) -> None:
    audio = load_audio(vowel_wav)
    frames, _ = read_video_frames(str(rendered))
    with MouthMeter() as meter:
        readings = [meter.read(f) for f in frames]
    assert all(r.found for r in readings), "FaceMesh lost the face in a rendered frame"
    aperture = np.array([r.aperture for r in readings])
    level = np.array([np.abs(audio[i * 640 : (i + 1) * 640]).max(initial=0) for i in range(len(frames))])
    quiet = aperture[: int(SILENCE_S * 25) - 3]
    loud = aperture[level > 0.3]
    assert quiet.max() < 0.02, f"mouth not shut in silence: {quiet.max():.3f}"
    assert np.median(loud) > 0.05, f"mouth not open on the vowel: {np.median(loud):.3f}"


def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, vowel_wav: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00\x01 not audio" * 50)
    empty = _write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32))
    damaged = float_wav(tmp_path / "damaged.wav", np.full(SAMPLE_RATE, np.nan))
    not_photo = tmp_path / "photo.jpg"
    not_photo.write_text("not an image")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (400, 400), (128, 128, 128)).save(blank)
    out = str(tmp_path / "out.mp4")
    cases = {
        "audio file not found": ["--audio", str(tmp_path / "missing.wav"), "--out", out],
        "cannot": ["--audio", str(junk), "--out", out],
        "empty": ["--audio", str(empty), "--out", out],
        "nan or infinite samples": ["--audio", str(damaged), "--out", out],
        "photo": ["--audio", str(vowel_wav), "--face", str(not_photo), "--out", out],
        "no face": ["--audio", str(vowel_wav), "--face", str(blank), "--out", out],
        "folder does not exist": ["--audio", str(vowel_wav), "--out", str(tmp_path / "no" / "o.mp4")],
        "even number of pixels": ["--audio", str(vowel_wav), "--out", out, "--size", "97"],
        "--size 0: use": ["--audio", str(vowel_wav), "--out", out, "--size", "0"],
        "--seed -5: use": ["--audio", str(vowel_wav), "--out", out, "--seed", "-5"],
        "name it .mp4": ["--audio", str(vowel_wav), "--out", str(tmp_path / "out.txt")],
        "does not support": ["--audio", str(vowel_wav), "--out", str(tmp_path / "out.webm")],
    }
    for expected, args in cases.items():
        result = lipstream("render", "--no-progress", *args)
        assert result.returncode == 2, (expected, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert expected in lines[0].lower(), (expected, lines[0])
    assert not Path(out).exists()  # nothing half-written is left behind


def test_an_output_that_is_the_audio_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    """A talk recorded as .mp4 and given as both --audio and --out: opening the output truncated
    the input while it was read (and a failure then deleted it)."""
    talk = tmp_path / "talk.mp4"
    with av.open(str(talk), "w") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.full((1, SAMPLE_RATE), 0.1, np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    before = talk.read_bytes()
    result = lipstream("render", "--no-progress", "--audio", str(talk), "--out", str(talk), "--size", "128")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"lipstream render: error: --out {talk} is the --audio file: writing would destroy it; "
        "give the output a new name"]
    assert talk.read_bytes() == before


def test_a_render_stopped_by_sigterm_leaves_no_file(tmp_path: Path) -> None:
    """`kill`, `timeout` or a cancelled CI job: Python's default SIGTERM ends at once, and the
    half-written mp4 (no index: unplayable) stayed where the output was asked for."""
    speech = _write_wav(tmp_path / "long.wav", np.full(SAMPLE_RATE * 300, 0.1, np.float32))  # 5 minutes
    out = tmp_path / "out.mp4"
    render = subprocess.Popen([sys.executable, "-m", "lipstream", "render", "--no-progress", "--audio",
                               str(speech), "--out", str(out), "--size", "64"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is writing
    render.send_signal(signal.SIGTERM)
    _, stderr = render.communicate(timeout=60)
    assert render.returncode == 128 + signal.SIGTERM, stderr
    assert b"Traceback" not in stderr
    assert not out.exists()


def test_audio_damaged_midway_ends_with_its_error_and_no_file(tmp_path: Path) -> None:
    second = np.zeros(SAMPLE_RATE, np.float32)
    damaged = float_wav(tmp_path / "damaged.wav", np.r_[second, np.nan, second])
    out = tmp_path / "out.mp4"
    result = lipstream("render", "--no-progress", "--audio", str(damaged), "--out", str(out), "--size", "128")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "nan or infinite samples" in result.stderr.strip().splitlines()[-1].lower()
    assert not out.exists()


def test_a_full_disk_ends_with_one_line_and_no_file(tmp_path: Path) -> None:
    """Writes that fail (here into /dev/full, as a full disk fails them) end the render with the
    reason, not av's traceback, and leave no unplayable file."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to stand for a full disk")
    speech = _write_wav(tmp_path / "tone.wav", np.full(SAMPLE_RATE * 4, 0.1, np.float32))
    out = tmp_path / "full.mp4"
    out.symlink_to("/dev/full")
    result = lipstream("render", "--no-progress", "--audio", str(speech), "--out", str(out), "--size", "64")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr.strip().splitlines()[-1]
    assert not out.is_symlink()


def test_bench_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = lipstream("bench", "--sizes", "128", "--motion", "baseline", "--seconds", "2",
                       "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "p50 ms" in result.stdout
    import json

    (row,) = json.loads(out.read_text())
    assert row["size"] == 128 and row["frames"] > 0 and row["p50_ms"] > 0


class _Recorder:
    """What each render hands its Mp4Writer, before the encoder: libx264 is not bit-exact from run to
    run under load (two of five CI runs differed in a few decoded pixels), the engine is."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[tuple[dict[int, np.ndarray], dict[int, np.ndarray]]] = []
        from lipstream.streaming.files import Mp4Writer

        write_i420, write_audio = Mp4Writer.write_i420, Mp4Writer.write_audio

        def video(writer: Mp4Writer, yuv: np.ndarray, index: int) -> None:
            self.runs[-1][0][index] = yuv.copy()
            write_i420(writer, yuv, index)

        def audio(writer: Mp4Writer, samples: np.ndarray, start_sample: int) -> None:
            self.runs[-1][1][start_sample] = samples.copy()
            write_audio(writer, samples, start_sample)

        monkeypatch.setattr(Mp4Writer, "write_i420", video)
        monkeypatch.setattr(Mp4Writer, "write_audio", audio)

    def start(self) -> None:
        self.runs.append(({}, {}))


def _reference_render(audio_path: Path, out: Path, size: int) -> None:
    """The whole-file path `render` used before it streamed: all audio in, finish, all frames out."""
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.engine import Engine, EngineConfig
    from lipstream.streaming.files import Mp4Writer

    audio = load_audio(audio_path)
    engine = Engine(Avatar.default(AvatarConfig(size=size)), EngineConfig())
    engine.push_audio(audio, SAMPLE_RATE)
    engine.finish()
    with Mp4Writer(out, size) as writer:
        while (frame := engine.pop_frame()) is not None:
            writer.write_i420(frame.yuv, frame.index)
            writer.write_audio(frame.audio[: max(audio.size - frame.audio_pts, 0)], frame.audio_pts)


def _decoded_frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize(("args", "expected"), [
    (["--sizes", "97"], "--size 97: use an even number"),
    (["--sizes", "0"], "--size 0: use an even number"),
    (["--seconds", "1"], "--seconds 1.0: measure at least"),  # all of it was burn-in: an IndexError
    (["--seconds", "-1"], "--seconds -1.0: measure at least"),
    (["--seconds", "nan"], "--seconds nan: measure at least"),
    (["--seconds", "inf"], "--seconds inf: measure at least"),
    (["--json", "nowhere/bench.json"], "output folder does not exist: nowhere"),  # after measuring
])
def test_bench_options_it_cannot_measure_give_one_line(args: list[str], expected: str) -> None:
    result = lipstream("bench", "--sizes", "128", "--motion", "baseline", "--seconds", "2", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lipstream bench: error: {expected}"), result.stderr


def test_streamed_render_matches_the_whole_file_render(vowel_wav: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A 44.1 kHz stereo file, so the decoder's chunks also pass through the resampler."""
    stereo = np.repeat(load_audio(vowel_wav)[:, None], 2, axis=1)
    source = tmp_path / "stereo.wav"
    with wave.open(str(source), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(44_100)
        resampled = np.interp(np.arange(0, len(stereo), SAMPLE_RATE / 44_100), np.arange(len(stereo)),
                              stereo[:, 0])
        w.writeframes((np.repeat(resampled[:, None], 2, axis=1) * 32767).astype(np.int16).tobytes())
    streamed, whole = tmp_path / "streamed.mp4", tmp_path / "whole.mp4"
    from lipstream.cli import main

    recorder = _Recorder(monkeypatch)
    recorder.start()
    assert main(["render", "--audio", str(source), "--out", str(streamed), "--size", "96",
                 "--no-progress", "--device", "cpu"]) == 0
    recorder.start()
    _reference_render(source, whole, 96)
    (streamed_images, streamed_audio), (whole_images, whole_audio) = recorder.runs
    assert sorted(streamed_images) == sorted(whole_images) == list(range(len(whole_images)))
    assert len(whole_images) > 50
    for index, image in whole_images.items():
        assert np.array_equal(streamed_images[index], image), f"frame {index} differs"
    assert sorted(streamed_audio) == sorted(whole_audio)
    for start, samples in whole_audio.items():
        assert np.array_equal(streamed_audio[start], samples), f"audio at {start} differs"
    assert _decoded_frame_count(streamed) == _decoded_frame_count(whole) == len(whole_images)


def _tone_wav(path: Path, seconds: int) -> Path:
    """Bursts of a 220 Hz tone, written second by second: long files cost the test no memory."""
    rng = np.random.default_rng(0)
    second = np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE) * 0.3
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        for _ in range(seconds):
            w.writeframes((second * (rng.random() > 0.5) * 32767).astype(np.int16).tobytes())
    return path


# The command in-process, then its own peak RSS. VmHWM starts afresh at exec; getrusage's maxrss
# of a child does not (it keeps the forking parent's, here all of pytest's).
_RUN_AND_REPORT_PEAK = """
import sys
from pathlib import Path
from lipstream.cli import main
code = main(sys.argv[1:])
status = Path("/proc/self/status").read_text().splitlines()
print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""


def _peak_rss_mb(*args: str) -> float:
    result = subprocess.run([sys.executable, "-c", _RUN_AND_REPORT_PEAK, *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]) / 1024  # kB


def test_render_memory_is_flat_in_the_audio_length(tmp_path: Path) -> None:
    """Measured: the whole-file render grew ~0.2 MB per second of audio (+60 MB at 300 s)."""
    peaks = {}
    for seconds in (10, 300):
        audio = _tone_wav(tmp_path / f"{seconds}.wav", seconds)
        out = str(tmp_path / "o.mp4")
        peaks[seconds] = _peak_rss_mb("render", "--audio", str(audio), "--out", out,
                                      "--size", "64", "--motion", "baseline", "--no-progress")
    assert peaks[300] < peaks[10] + 10, peaks


def test_the_progress_total_comes_from_the_files_duration(tmp_path: Path) -> None:
    from lipstream.engine.audio import AudioFile

    audio = AudioFile(_tone_wav(tmp_path / "tone.wav", 3))
    assert audio.duration_s == pytest.approx(3.0, abs=0.01)
    result = lipstream("render", "--audio", str(audio.path), "--out", str(tmp_path / "o.mp4"),
                       "--size", "64", "--motion", "baseline")
    assert result.returncode == 0, result.stderr
    assert "75/75" in result.stderr  # the bar knew its total: 3 s x 25 fps
