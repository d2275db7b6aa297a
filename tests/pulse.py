"""A virtual microphone for tests: a private PulseAudio daemon whose pipe source we feed in real time.

NOTES.md "Microphone without a sound card": `module-pipe-source` (s16le, 16 kHz, mono) is a
bit-exact microphone; PortAudio (ALSA host API only on Debian) reaches it through the ALSA
`pulse` plugin and a named PCM in `$HOME/.asoundrc`. The daemon, its socket and HOME live in a
fresh temporary folder, so nothing touches the user's sound setup.
"""

import contextlib
import glob
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

PCM_NAME = "lipstream_virtmic"  # the ALSA PCM name PortAudio lists as an input device
RATE = 16_000
CHUNK_SAMPLES = 320  # 20 ms per write, like a sound card's period
PLUGIN_GLOBS = ["/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so",
                "/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so"]


def skip_unless_available() -> None:
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (apt-get install pulseaudio)")
    if not any(glob.glob(pattern) for pattern in PLUGIN_GLOBS):
        pytest.skip("the ALSA pulse plugin is not installed (apt-get install libasound2-plugins)")
    pytest.importorskip("pyaudio", reason="pyaudio is not installed (pip install 'lipstream[mic]')")


class VirtualMicrophone:
    """Writes queued int16 audio into the pipe source at 16 kHz real time, and silence in between
    (a pipe source with no writer blocks its readers, unlike a real microphone)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fifo = folder / "virtmic"
        self.socket = folder / "native"
        self._pending: queue.Queue[np.ndarray] = queue.Queue()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._daemon: subprocess.Popen[bytes] | None = None

    def play(self, pcm: np.ndarray) -> None:
        """Queue int16 samples; they follow whatever is already queued."""
        if pcm.size:
            self._pending.put(np.ascontiguousarray(pcm, dtype=np.int16))

    def wait_played(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self) -> None:
        (self.folder / "home").mkdir()
        (self.folder / "home" / ".asoundrc").write_text(
            f'pcm.{PCM_NAME} {{\n  type pulse\n  device {PCM_NAME}\n  server "unix:{self.socket}"\n}}\n')
        script = self.folder / "script.pa"
        script.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            f"load-module module-pipe-source source_name={PCM_NAME} file={self.fifo} "
            f"format=s16le rate={RATE} channels=1\n")
        # a child in the foreground rather than --daemonize: the test reaps it (a daemonized
        # one is re-parented to pid 1, which in some containers never reaps it: a zombie)
        self._daemon = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1",
             "--log-target=stderr"],
            env={**os.environ, **self.environment()}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_for_daemon()
        self._writer = threading.Thread(target=self._write, name="virtual-microphone", daemon=True)
        self._writer.start()

    def environment(self) -> dict[str, str]:
        """What the process using the microphone needs: ALSA reads $HOME/.asoundrc."""
        return {"HOME": str(self.folder / "home"), "XDG_RUNTIME_DIR": str(self.folder)}

    def stop(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.join(5)
        if self._daemon is not None:
            self._daemon.terminate()
            try:
                self._daemon.wait(5)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
                self._daemon.wait()
            self._daemon = None

    def _wait_for_daemon(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._daemon is not None and self._daemon.poll() is not None:
                raise RuntimeError(f"the private PulseAudio daemon exited with {self._daemon.returncode}")
            if self.socket.exists() and self.fifo.exists():
                return
            time.sleep(0.05)
        raise RuntimeError("the private PulseAudio daemon did not start within 10 s")

    def _write(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)
        silence = np.zeros(CHUNK_SAMPLES, np.int16)
        current = np.zeros(0, np.int16)
        next_t = time.monotonic()
        try:
            while not self._stop.is_set():
                if current.size == 0:
                    current = self._next_pending()
                chunk = current[:CHUNK_SAMPLES] if current.size else silence
                current = current[chunk.size:] if current.size else current
                try:
                    os.write(fd, chunk.tobytes())
                except BrokenPipeError:  # the daemon reading the FIFO has gone: a microphone unplugged
                    return
                if current.size == 0 and chunk is not silence:
                    self._pending.task_done()
                next_t += chunk.size / RATE  # absolute deadlines: no drift from summed sleeps
                time.sleep(max(next_t - time.monotonic(), 0))
        finally:
            os.close(fd)

    def _next_pending(self) -> np.ndarray:
        try:
            return self._pending.get_nowait()
        except queue.Empty:
            return np.zeros(0, np.int16)


@contextlib.contextmanager
def fresh_portaudio() -> Iterator[None]:
    """Make the next PortAudio start list devices anew, with our .asoundrc.

    mediapipe imports sounddevice, which starts PortAudio (a shared library, shared with PyAudio)
    at import; PortAudio lists devices only when first started and libasound reads its
    configuration once per process. So sounddevice's hold is released while the microphone
    runs, and libasound's cached configuration is dropped.
    """
    import ctypes
    import ctypes.util

    sounddevice = sys.modules.get("sounddevice")
    held = 0
    while sounddevice is not None and sounddevice._initialized > 0:
        sounddevice._terminate()
        held += 1
    if (libasound := ctypes.util.find_library("asound")) is not None:
        ctypes.CDLL(libasound).snd_config_update_free_global()
    try:
        yield
    finally:
        for _ in range(held):
            sounddevice._initialize()  # type: ignore[union-attr]


@contextlib.contextmanager
def virtual_microphone() -> Iterator[VirtualMicrophone]:
    """A running virtual microphone with this process's HOME pointing at its .asoundrc."""
    skip_unless_available()
    # a short folder: a unix socket path must fit in 108 bytes
    folder = Path(tempfile.mkdtemp(prefix="lsmic-"))
    mic = VirtualMicrophone(folder)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in mic.environment().items():
            patch.setenv(key, value)
        try:
            mic.start()
            with fresh_portaudio():
                yield mic
        finally:
            mic.stop()
            shutil.rmtree(folder, ignore_errors=True)
