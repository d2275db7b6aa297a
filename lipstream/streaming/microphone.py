"""Microphone capture with PyAudio: 16 kHz mono int16 when the device takes it, else its own rate.

PortAudio calls back from its own thread with one chunk at a time; the chunks wait in a queue
bounded by `queue_ms` for the reader (`Microphone.read`). The engine's AudioIn resamples any
rate to 16 kHz, so a device that only offers 44.1 or 48 kHz works unchanged.
"""

import contextlib
import queue
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.native_log import native_stderr_silenced
from lipstream.errors import DeviceError

LIST_HINT = "see `lipstream live --list-devices`"


@dataclass(frozen=True)
class MicrophoneConfig:
    device: str | None = None  # a device name, a unique part of one, or its index; None: the default
    chunk_ms: int = 20  # audio per PortAudio callback
    queue_ms: int = 1000  # audio held for a reader that fell behind; beyond it the oldest is dropped


@dataclass(frozen=True)
class InputDevice:
    index: int  # PortAudio's device index
    name: str
    channels: int  # most input channels it offers
    default_rate: int  # Hz
    is_default: bool

    def describe(self) -> str:
        mark = "  (default)" if self.is_default else ""
        return f"{self.index:3d}  {self.name}  [{self.channels} ch, {self.default_rate} Hz]{mark}"


@dataclass(frozen=True)
class AudioChunk:
    pcm: np.ndarray  # (samples,) int16 mono
    sample_rate: int  # Hz


def load_pyaudio() -> ModuleType:
    try:
        import pyaudio
    except ImportError:
        raise DeviceError("pyaudio is not installed: pip install 'lipstream[mic]' "
                          "(on Debian/Ubuntu first: sudo apt install portaudio19-dev)") from None
    module: ModuleType = pyaudio
    return module


def open_portaudio() -> Any:
    """A PyAudio instance. PortAudio probes ALSA and JACK on start and prints a page of
    'ALSA lib ...' and 'jack server is not running' lines to fd 2 that mean nothing to a user."""
    pyaudio = load_pyaudio()
    with native_stderr_silenced():
        return pyaudio.PyAudio()


def list_input_devices(pa: Any) -> list[InputDevice]:
    try:
        default_index = int(pa.get_default_input_device_info()["index"])
    except OSError:  # PortAudio: "No Default Input Device Available"
        default_index = -1
    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if int(info["maxInputChannels"]) > 0:
            devices.append(InputDevice(index, str(info["name"]), int(info["maxInputChannels"]),
                                       int(info["defaultSampleRate"]), index == default_index))
    return devices


def choose_device(devices: list[InputDevice], wanted: str | None) -> InputDevice:
    """The device named `wanted` (exact name, index, or a unique part of a name), else the default."""
    if not devices:
        raise DeviceError("no microphone found: connect one or start the sound server "
                          f"(PulseAudio/PipeWire), then {LIST_HINT}")
    if wanted is None:
        return next((d for d in devices if d.is_default), devices[0])
    for device in devices:
        if device.name == wanted or (wanted.isdigit() and device.index == int(wanted)):
            return device
    matches = [d for d in devices if wanted.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"no microphone named '{wanted}': {LIST_HINT}")
    names = ", ".join(f"'{d.name}'" for d in matches)
    raise DeviceError(f"'{wanted}' matches several microphones ({names}): give the full name or index")


def choose_rate(pa: Any, device: InputDevice) -> int:
    """16 kHz when the device takes it (no resampling), else the device's own default rate."""
    pyaudio = load_pyaudio()
    try:
        pa.is_format_supported(SAMPLE_RATE, input_device=device.index, input_channels=1,
                               input_format=pyaudio.paInt16)
    except ValueError:  # PortAudio: "Invalid sample rate" and kin
        return device.default_rate
    return SAMPLE_RATE


class Microphone:
    """One open input stream, capturing from the start. Use as a context manager; `read` hands
    out what came after `start()`."""

    def __init__(self, config: MicrophoneConfig | None = None) -> None:
        self.config = config or MicrophoneConfig()
        chunks_held = max(self.config.queue_ms // self.config.chunk_ms, 1)
        self._queue: queue.Queue[bytes] = queue.Queue(chunks_held)
        self.dropped_chunks = 0  # chunks lost because the reader fell more than queue_ms behind
        self._continue = load_pyaudio().paContinue
        self._pa: Any = open_portaudio()
        self._stream: Any = None
        try:
            self.device = choose_device(list_input_devices(self._pa), self.config.device)
            self.sample_rate = choose_rate(self._pa, self.device)
            self._stream = self._open_stream()
        except BaseException:
            self.close()
            raise

    def _open_stream(self) -> Any:
        pyaudio = load_pyaudio()
        try:
            with native_stderr_silenced():
                return self._pa.open(
                    rate=self.sample_rate, channels=1, format=pyaudio.paInt16, input=True,
                    input_device_index=self.device.index,
                    frames_per_buffer=self.sample_rate * self.config.chunk_ms // 1000,
                    stream_callback=self._on_audio, start=True)
        except OSError as exc:  # busy, unplugged, or a format the device refuses
            raise DeviceError(f"cannot open microphone '{self.device.name}': {exc}; {LIST_HINT}") from None

    def start(self) -> None:
        """Hand out audio from now on. The device has captured since it opened: started later,
        a device gone in between hangs PortAudio's start for good (even Ctrl-C waits on it)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self.dropped_chunks = 0

    def read(self, timeout_s: float) -> AudioChunk | None:
        """The next chunk, or None if none arrived within `timeout_s` (0: do not wait). Raises
        DeviceError once the device is gone and its last audio has been read."""
        try:
            data = self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            self._check_alive()
            return None
        return AudioChunk(np.frombuffer(data, dtype=np.int16), self.sample_rate)

    def _check_alive(self) -> None:
        # PortAudio ends a started stream whose device went away (unplugged, the sound server
        # ended); it never calls back again, and a silent run would go on recording nothing
        if self._stream is not None and not self._stream.is_active():
            raise DeviceError(f"microphone '{self.device.name}' stopped delivering audio (unplugged, or "
                              f"its sound server ended); {LIST_HINT}")

    def close(self) -> None:
        """Stop and release the device; safe to call twice."""
        if self._stream is not None:
            self._stream.stop_stream()
            self._stream.close()
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None

    def _on_audio(self, data: bytes, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
        # PortAudio's thread: never block here, or the device overruns.
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self._drop_oldest(data)
        return None, self._continue

    def _drop_oldest(self, data: bytes) -> None:
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()
        self.dropped_chunks += 1
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self.dropped_chunks += 1

    def __enter__(self) -> "Microphone":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
