"""`lipstream live` with a real microphone stack: a private PulseAudio daemon is the microphone,
PortAudio reads it through ALSA, and the frames are checked where they enter pyvirtualcam.

v4l2loopback cannot be loaded here, so the test registers a pyvirtualcam backend that keeps the
frames: `pyvirtualcam.Camera` itself (format and shape checks included) runs unchanged.
"""

import glob
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipstream.cli import main
from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS
from tests.conftest import espeak_wav
from tests.pulse import PCM_NAME, VirtualMicrophone, virtual_microphone

LEAD_SILENCE_S = 1.0  # before the speech: the mouth must be shut
RECORDER = "lipstream-test-recorder"


@pytest.fixture(scope="module")
def mic() -> Iterator[VirtualMicrophone]:
    with virtual_microphone() as running:
        yield running


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Open-mouthed speech, 16 kHz int16, that starts and ends on silence."""
    wav = espeak_wav(tmp_path_factory.mktemp("live") / "speech.wav", "Ah, papa, a big map. Mama, wow!",
                     "-s", "130")
    audio = load_audio(wav)
    audio = audio / max(float(np.abs(audio).max()), 1e-6) * 0.8
    return (audio * 32767).astype(np.int16)


class RecordingBackend:
    """A pyvirtualcam backend (the documented Backend shape) that keeps what it is sent."""

    frames: list[np.ndarray] = []
    on_first_frame: list[Callable[[], None]] = []  # run once, when the first frame arrives

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None,
                 **kw: object) -> None:
        self.width, self.height = width, height
        type(self).frames = []

    def send(self, frame: np.ndarray) -> None:
        if not self.frames:
            for hook in self.on_first_frame:
                hook()
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "recorder"

    def native_fourcc(self) -> None:
        return None


def test_pyaudio_reads_the_virtual_microphone_bit_exactly(mic: VirtualMicrophone, speech: np.ndarray) -> None:
    from lipstream.streaming.microphone import Microphone, MicrophoneConfig

    with Microphone(MicrophoneConfig(device=PCM_NAME)) as microphone:
        assert microphone.sample_rate == SAMPLE_RATE, "16 kHz is supported, so nothing is resampled"
        microphone.start()
        mic.play(speech)
        chunks = []
        deadline = time.monotonic() + speech.size / SAMPLE_RATE + 1.0
        while time.monotonic() < deadline:
            if (chunk := microphone.read(0.5)) is not None:
                chunks.append(chunk.pcm)
    got = np.concatenate(chunks)
    first_in_speech = int(np.flatnonzero(speech)[0])
    start = int(np.flatnonzero(got)[0]) - first_in_speech
    assert start >= 0
    np.testing.assert_array_equal(got[start : start + speech.size], speech)


def test_live_renders_the_microphone_into_the_virtual_camera(mic: VirtualMicrophone, speech: np.ndarray,
                                                             tmp_path: Path) -> None:
    import av
    import pyvirtualcam

    from lipstream.training.evaluate import MouthMeter

    pyvirtualcam.register_backend(RECORDER, RecordingBackend)
    lead = np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), np.int16)
    # the speech starts when the first frame leaves: the avatar's set-up time does not matter
    RecordingBackend.on_first_frame = [lambda: mic.play(np.concatenate([lead, speech]))]
    seconds = LEAD_SILENCE_S + speech.size / SAMPLE_RATE + 1.0
    try:
        code = main(["live", "--mic", PCM_NAME, "--vcam", "--vcam-backend", RECORDER,
                     "--out", str(tmp_path / "live.mp4"), "--seconds", f"{seconds:.2f}", "--size", "256"])
    finally:
        RecordingBackend.on_first_frame = []
    frames = RecordingBackend.frames
    assert code == 0
    assert len(frames) == round(seconds * VIDEO_FPS)
    assert frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8

    with MouthMeter() as meter:
        aperture = np.array([meter.read(f).aperture for f in frames])
    speech_start = int(LEAD_SILENCE_S * VIDEO_FPS)
    speech_end = speech_start + speech.size // SAMPLES_PER_VIDEO_FRAME
    quiet = aperture[: int(speech_start * 0.6)]  # well inside the leading silence
    talking = aperture[speech_start:speech_end]
    assert quiet.max() < 0.02, f"mouth not shut before the speech: {quiet.max():.3f}"
    assert np.percentile(talking, 90) > 0.05, f"mouth never opened with the speech: {talking.max():.3f}"
    after = aperture[speech_end + 5 :]  # the trailing silence, past the pipeline's latency
    assert after.size and after.max() < 0.02, f"mouth not shut after the speech: {after.max():.3f}"

    # the file gets what the camera cannot carry: the voice, stamped with its frames
    with av.open(str(tmp_path / "live.mp4")) as container:
        video_frames = sum(1 for _ in container.decode(video=0))
        container.seek(0)
        voice = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert video_frames == len(frames)
    assert abs(voice.size / SAMPLE_RATE - seconds) < 0.15  # AAC adds a little priming
    assert np.sqrt(np.mean(voice**2)) > 0.02, "the file's audio is silent"


def lipstream_live(mic: VirtualMicrophone, *args: str, block: str = "") -> subprocess.CompletedProcess[str]:
    """`lipstream live ...` as a user runs it; `block` names a module to make unimportable."""
    code = "import sys\n" + (f"sys.modules[{block!r}] = None\n" if block else "") + \
        "from lipstream.cli import main; raise SystemExit(main(['live', *sys.argv[1:]]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **mic.environment()})


def test_live_writes_its_file_with_the_h264_encoder_asked_for(mic: VirtualMicrophone, tmp_path: Path) -> None:
    """`--video-codec` as `render` takes it: no GPU here, so libx264, and one line saying why."""
    import av

    from lipstream.streaming.encoders import LIBX264

    out = tmp_path / "live.mp4"
    seconds = 0.4  # the microphone is not fed: the frames are the stall's idle ones
    result = lipstream_live(mic, "--mic", PCM_NAME, "--out", str(out), "--video-codec", "h264",
                            "--seconds", str(seconds), "--size", "128")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "lipstream video:" in line]
    assert len(said) == 1 and f"files {LIBX264}" in said[0], result.stderr
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == round(seconds * VIDEO_FPS)
    refused = lipstream_live(mic, "--out", str(out), "--video-codec", "vp8")
    assert refused.returncode == 2 and "invalid choice: 'vp8'" in refused.stderr  # files are H.264


def test_a_microphone_that_goes_away_ends_the_run_with_one_line_and_a_playable_file(tmp_path: Path) -> None:
    """The sound server dies mid-run (or the device is unplugged): live says so and exits 2, its mp4
    closed and playable, instead of recording idle frames from a dead device until --seconds."""
    import av

    out, seconds = tmp_path / "live.mp4", 30
    with virtual_microphone() as gone:  # its own: this test kills its daemon
        code = "from lipstream.cli import main; import sys; raise SystemExit(main(['live', *sys.argv[1:]]))"
        live = subprocess.Popen([sys.executable, "-c", code, "--mic", PCM_NAME, "--out", str(out), "--size",
                                 "128", "--seconds", str(seconds)], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **gone.environment()})
        assert live.stderr is not None
        said = next((line for line in live.stderr if "Ctrl-C stops" in line or "error" in line), "")
        assert "Ctrl-C stops" in said, said  # the microphone is running
        time.sleep(0.5)
        gone.stop()  # the daemon ends: the device is gone
        rest = live.communicate(timeout=seconds)[1]
    assert live.returncode == 2, rest
    assert f"lipstream live: error: microphone '{PCM_NAME}' stopped delivering audio" in rest
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert 0 < frames < seconds * VIDEO_FPS


def test_a_microphone_gone_before_capture_starts_is_said_not_waited_for() -> None:
    """The device goes between its opening and the start of capture (in `live`, while the photo
    is analysed): PortAudio's start then hung for good, and Ctrl-C could not stop it."""
    code = ("from lipstream.streaming.microphone import Microphone, MicrophoneConfig\n"
            "import sys\n"
            f"microphone = Microphone(MicrophoneConfig(device={PCM_NAME!r}))\n"
            "print('open', flush=True)\n"
            "sys.stdin.readline()\n"
            "microphone.start()\n"
            "while True:\n"
            "    microphone.read(1.0)  # until the device's loss is said\n")
    with virtual_microphone() as gone:
        reader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**os.environ, **gone.environment()})
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline() == "open\n"
        gone.stop()
        time.sleep(0.5)
        try:
            reader.stdin.write("\n")
            reader.stdin.flush()
            stderr = reader.communicate(timeout=20)[1]
        finally:
            reader.kill()
    assert f"DeviceError: microphone '{PCM_NAME}' stopped delivering audio" in stderr


def test_a_full_disk_ends_the_run_with_one_line_and_no_unplayable_file(mic: VirtualMicrophone,
                                                                      tmp_path: Path) -> None:
    """--out on a disk that fills up (here /dev/full): one line and exit 2; it was a segfault,
    FFmpeg crashing as the file was closed after its failed write."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to stand for a full disk")
    out = tmp_path / "full.mp4"
    out.symlink_to("/dev/full")
    result = lipstream_live(mic, "--mic", PCM_NAME, "--out", str(out), "--seconds", "4", "--size", "128")
    assert result.returncode == 2, result.stderr
    said = f"lipstream live: error: cannot write {out}: No space left on device; the unfinished file was "
    said += "removed"
    assert result.stderr.strip().splitlines()[-1] == said
    assert not out.is_symlink()


def test_list_devices_names_the_microphone(mic: VirtualMicrophone) -> None:
    result = lipstream_live(mic, "--list-devices")
    assert result.returncode == 0, result.stderr
    assert PCM_NAME in result.stdout


@pytest.mark.parametrize(("args", "block", "expected"), [
    (["--mic", "no-such-mic", "--out", "x.mp4"], "", "--list-devices"),
    (["--vcam"], "", "modprobe v4l2loopback"),
    (["--vcam", "--vcam-backend", "nope"], "", "unknown virtual camera backend"),
    (["--list-devices"], "pyaudio", "pip install 'lipstream[mic]'"),
    (["--vcam"], "pyvirtualcam", "pip install 'lipstream[vcam]'"),
    ([], "", "--vcam"),
    (["--mic", PCM_NAME, "--out", "x.mp4", "--size", "301"], "", "--size 301: use an even number"),
    (["--mic", PCM_NAME, "--out", "x.mp4", "--size", "8"], "", "--size 8: use an even number"),
    (["--mic", PCM_NAME, "--out", "x.mp4", "--seconds", "nan"], "", "--seconds nan: use a number of"),
    (["--mic", PCM_NAME, "--out", "x.mp4", "--seconds", "-1"], "", "--seconds -1.0: use a number of"),
    (["--mic", PCM_NAME, "--out", "x.mp4", "--seconds", "0.01"], "", "--seconds 0.01: use a number of"),
    (["--mic", PCM_NAME, "--out", "x.txt"], "", "name it .mp4"),
])
def test_missing_devices_give_one_line_naming_the_fix(mic: VirtualMicrophone, tmp_path: Path, args: list[str],
                                                      block: str, expected: str) -> None:
    if expected.startswith("modprobe") and glob.glob("/dev/video*"):
        pytest.skip("this machine has video devices: a virtual camera may well open")
    args = [str(tmp_path / a) if a.endswith((".mp4", ".txt")) else a for a in args]
    result = lipstream_live(mic, *args, block=block)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


class ScriptedSource:
    """Audio as a microphone would hand it over; None stands for a read that timed out (a stall)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def read(self, timeout_s: float) -> Any:
        if not self.items or (self.items[0] is None and timeout_s <= 0):
            return None
        return self.items.pop(0)


class KeptFrames:
    def __init__(self) -> None:
        self.frames: list[Any] = []

    def send(self, frame: Any) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


def test_live_loop_skips_a_backlog_and_keeps_the_camera_alive_through_a_stall(speech: np.ndarray) -> None:
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.engine import Engine
    from lipstream.streaming.live import LiveConfig, LiveLoop
    from lipstream.streaming.microphone import AudioChunk

    second = speech[:SAMPLE_RATE]
    stall_s = 0.2
    times = iter(np.arange(0, 100, stall_s))  # each read that times out took stall_s
    source = ScriptedSource([AudioChunk(second, SAMPLE_RATE), None, None,
                             AudioChunk(second, SAMPLE_RATE)])
    sink = KeptFrames()
    engine = Engine(Avatar.default(AvatarConfig(size=128)))
    loop = LiveLoop(engine, source, [sink], LiveConfig(max_backlog_ms=80, stall_ms=200),
                    now=lambda: next(times))
    burst = (SAMPLE_RATE - engine.lookahead_samples) // SAMPLES_PER_VIDEO_FRAME  # frames from 1 s
    idle = round(2 * stall_s * VIDEO_FPS)
    stats = loop.run(max_frames=burst + idle + burst)

    rendered = [f.rendered for f in sink.frames]
    # a second of audio at once is a backlog: only the newest two frames (80 ms) are rendered
    assert rendered[:burst] == [False] * (burst - 2) + [True, True]
    assert stats.idle == idle, "the stall was filled at 25 fps"
    assert rendered[-burst:] == [False] * (burst - 2) + [True, True], "after the stall, back to the live edge"
    assert [f.index for f in sink.frames] == list(range(len(sink.frames))), "frames are numbered without gaps"
    assert stats.frames == len(sink.frames) == stats.rendered + stats.skipped
