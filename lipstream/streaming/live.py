"""`lipstream live`: microphone in, frames out to a virtual camera (and/or an mp4 file).

One thread does everything: it waits for microphone audio, feeds the engine and renders the
frames the audio completes. The microphone is the clock: 640 samples make one frame, so frames
leave at the device's 25 fps and cannot drift from its audio however long the run. Pacing
against the wall clock instead would drift by the device's crystal error (tens of ppm: a whole
frame every 10-20 minutes). The monotonic clock is used only when the microphone stalls, to keep
making idle frames at 25 fps so the camera never freezes.

When rendering falls behind, the frames more than `max_backlog_ms` behind the microphone are
taken without rendering (the image repeats, the mouth and the audio advance): the output stays
live instead of queueing seconds of video.
"""

import argparse
import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lipstream.engine.constants import (
    MAX_SIZE_PX,
    MIN_SIZE_PX,
    SAMPLE_RATE,
    SAMPLES_PER_VIDEO_FRAME,
    VIDEO_FPS,
    size_problem,
)
from lipstream.engine.device import add_device_argument, choose_device
from lipstream.engine.inputfile import check_input_file
from lipstream.engine.native_log import native_stderr_silenced
from lipstream.errors import DeviceError, LipstreamError, PhotoError
from lipstream.streaming.encoders import add_file_codec_argument, resolve_video_codec
from lipstream.streaming.files import check_video_out
from lipstream.streaming.microphone import (
    AudioChunk,
    Microphone,
    MicrophoneConfig,
    list_input_devices,
    open_portaudio,
)
from lipstream.streaming.sinks import FrameSink, Mp4Sink
from lipstream.streaming.vcam import VirtualCamera, VirtualCameraConfig
from lipstream.streaming.worker import FrameEngine

if TYPE_CHECKING:
    from lipstream.engine.avatar import AvatarConfig

FRAME_S = 1.0 / VIDEO_FPS  # 40 ms


@dataclass(frozen=True)
class LiveConfig:
    max_backlog_ms: int = 80  # render a frame only if it is at most this far behind the microphone
    stall_ms: int = 200  # no audio for this long: the microphone stalled; make idle frames


class AudioSource(Protocol):
    def read(self, timeout_s: float) -> AudioChunk | None: ...


class LiveEngine(FrameEngine, Protocol):
    """What the live loop needs of `lipstream.engine.Engine`."""

    def ready(self) -> int: ...

    def clear(self) -> None: ...


@dataclass
class LiveStats:
    frames: int = 0  # handed to the sinks
    rendered: int = 0
    skipped: int = 0  # taken without rendering to keep up
    idle: int = 0  # made from silence while the microphone stalled

    def describe(self) -> str:
        return (f"{self.frames} frames ({self.rendered} rendered, {self.skipped} skipped to keep up, "
                f"{self.idle} idle while the microphone stalled)")


class LiveLoop:
    def __init__(self, engine: LiveEngine, source: AudioSource, sinks: Sequence[FrameSink],
                 config: LiveConfig | None = None, now: Callable[[], float] = time.monotonic) -> None:
        self.engine, self.source, self.sinks = engine, source, list(sinks)
        self.config = config or LiveConfig()
        self.stats = LiveStats()
        self._now = now
        self._stalled = False
        self._max_frames: int | None = None
        self._max_backlog_frames = max(self.config.max_backlog_ms * VIDEO_FPS // 1000, 1)

    def run(self, max_frames: int | None = None, stop: threading.Event | None = None) -> LiveStats:
        """Until `max_frames` frames have gone out, or `stop` is set (or Ctrl-C)."""
        self._max_frames = max_frames
        accounted = self._now()  # time up to which input (audio or stall silence) has been taken
        while not (stop is not None and stop.is_set()) and not self._done():
            wait_s = FRAME_S if self._stalled else self.config.stall_ms / 1000
            chunk = self.source.read(wait_s)
            now = self._now()
            if chunk is None:
                self._fill_stall(now - accounted)
            else:
                self._take_audio(chunk)
            accounted = now
        return self.stats

    def _done(self) -> bool:
        return self._max_frames is not None and self.stats.frames >= self._max_frames

    def _take_audio(self, chunk: AudioChunk) -> None:
        if self._stalled:
            # the stall was filled with silence; restart the input so the late audio does not
            # add the stall's length to the latency for the rest of the run
            self.engine.clear()
            self._stalled = False
        chunks = [chunk]
        while (more := self.source.read(0)) is not None:  # whatever queued while we worked
            chunks.append(more)
        self._feed(chunks)

    def _fill_stall(self, elapsed_s: float) -> None:
        self._stalled = True
        self.stats.idle += self._feed([AudioChunk(np.zeros(round(elapsed_s * SAMPLE_RATE), np.int16),
                                                  SAMPLE_RATE)])

    def _feed(self, chunks: list[AudioChunk]) -> int:
        """Push the audio one frame's worth at a time, handing out each frame as it completes, so
        every frame knows how much audio is still in hand behind it (the backlog that decides
        whether it is rendered). Returns how many frames went out."""
        waiting = sum(c.pcm.shape[0] * SAMPLE_RATE / c.sample_rate for c in chunks)  # 16 kHz samples
        sent = 0
        for chunk in chunks:
            step = max(chunk.sample_rate * SAMPLES_PER_VIDEO_FRAME // SAMPLE_RATE, 1)
            for start in range(0, chunk.pcm.shape[0], step):
                piece = chunk.pcm[start : start + step]
                self.engine.push_audio(piece, chunk.sample_rate)
                waiting -= piece.shape[0] * SAMPLE_RATE / chunk.sample_rate
                sent += self._emit(waiting / SAMPLES_PER_VIDEO_FRAME)
                if self._done():
                    return sent
        return sent

    def _emit(self, waiting_frames: float) -> int:
        """Hand out the frames the engine can make; render only those within the backlog limit
        of the newest audio in hand (`waiting_frames` of it not yet pushed)."""
        sent = 0
        while (ready := self.engine.ready()) > 0 and not self._done():
            frame = self.engine.pop_frame(render=ready + waiting_frames <= self._max_backlog_frames)
            if frame is None:
                break
            for sink in self.sinks:
                sink.send(frame)
            sent += 1
            self.stats.frames += 1
            self.stats.rendered += frame.rendered
            self.stats.skipped += not frame.rendered
        return sent


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--face", type=Path, metavar="PHOTO", help="face photo (default: the bundled avatar)")
    add("--mic", metavar="DEVICE", help="microphone: a name, a unique part of one, or an index "
        "(see --list-devices; default: the system's default input)")
    add("--list-devices", action="store_true", help="print the microphones and exit")
    add("--vcam", action="store_true", help="send the video to a virtual camera (it carries no audio)")
    add("--vcam-device", metavar="DEVICE", help="virtual camera, e.g. /dev/video2 (default: the first)")
    add("--vcam-backend", metavar="NAME", help="pyvirtualcam backend: v4l2loopback, obs, unitycapture")
    add("--out", type=Path, metavar="FILE.mp4", help="also write the video and the audio to this file")
    add("--seconds", type=float, metavar="N", help="stop after N seconds of video (default: Ctrl-C)")
    add("--size", type=int, metavar="PX", help="output side in pixels, even "
        f"({MIN_SIZE_PX} to {MAX_SIZE_PX}; default: the avatar's)")
    add_device_argument(parser)
    add_file_codec_argument(parser)  # --video-codec: who encodes --out's H.264


def _check_options(args: argparse.Namespace) -> None:
    """The cheap checks, before the microphone opens and the avatar is analysed."""
    if not args.vcam and args.out is None:
        raise LipstreamError("nothing to send the video to: add --vcam (virtual camera) "
                             "and/or --out FILE.mp4")
    if args.face is not None:
        check_input_file(args.face, "photo", PhotoError)
    if args.size is not None and (problem := size_problem(args.size)) is not None:
        raise LipstreamError(problem)
    if args.seconds is not None and not (0 < args.seconds < math.inf and _frames(args.seconds) > 0):  # NaN
        raise LipstreamError(f"--seconds {args.seconds}: use a number of seconds of at least {FRAME_S:g} "
                             "(one frame), or leave it out to run until Ctrl-C")
    if args.out is not None:
        check_video_out(args.out)


def _frames(seconds: float) -> int:
    return round(seconds * VIDEO_FPS)


def run_live(args: argparse.Namespace) -> int:
    if args.list_devices:
        return _list_devices()
    _check_options(args)
    device = choose_device(args.device).device  # --device cuda, no GPU: fails before the microphone opens
    with contextlib.ExitStack() as stack:
        mic = stack.enter_context(Microphone(MicrophoneConfig(device=args.mic)))  # cheap checks first
        from lipstream.engine.avatar import AvatarConfig

        avatar_config = AvatarConfig() if args.size is None else AvatarConfig(size=args.size)
        sinks = _open_sinks(args, avatar_config.size, device, stack)
        loop = LiveLoop(_make_engine(args.face, avatar_config, args.device), mic, sinks)
        latency_ms = 1000 * loop.engine.latency_samples // SAMPLE_RATE
        _say(f"microphone '{mic.device.name}' at {mic.sample_rate} Hz -> "
             + ", ".join(_describe(s, latency_ms) for s in sinks) + "; Ctrl-C stops")
        mic.start()
        try:
            stats = loop.run(None if args.seconds is None else _frames(args.seconds))
        except KeyboardInterrupt:
            stats = loop.stats
        dropped = f", {mic.dropped_chunks} audio chunks dropped" if mic.dropped_chunks else ""
        _say(stats.describe() + dropped)
    return 0


def _make_engine(face: Path | None, avatar_config: "AvatarConfig", device: str) -> LiveEngine:
    from lipstream.engine.avatar import Avatar
    from lipstream.engine.engine import Engine, EngineConfig

    with native_stderr_silenced():  # FaceMesh's start-up lines (see native_log.py)
        avatar = Avatar.from_image(face, avatar_config) if face else Avatar.default(avatar_config)
    engine: LiveEngine = Engine(avatar, EngineConfig(device=device))
    return engine


def _open_sinks(args: argparse.Namespace, size: int, device: str,
                stack: contextlib.ExitStack) -> list[FrameSink]:
    sinks: list[FrameSink] = []
    if args.vcam:
        config = VirtualCameraConfig(device=args.vcam_device, backend=args.vcam_backend)
        sinks.append(VirtualCamera(size, config))
        stack.callback(sinks[-1].close)
    if args.out is not None:
        encoder = resolve_video_codec(args.video_codec, args.device, device).h264_encoder  # one log line
        sinks.append(Mp4Sink(args.out, size, encoder))
        stack.callback(sinks[-1].close)
    return sinks


def _describe(sink: FrameSink, latency_ms: int) -> str:
    if isinstance(sink, VirtualCamera):
        return (f"virtual camera {sink.device} (video only, at least {latency_ms} ms behind the "
                "microphone: a call app that uses the microphone directly hears the voice first)")
    return f"{sink.path} (video and audio)" if isinstance(sink, Mp4Sink) else type(sink).__name__


def _list_devices() -> int:
    pa = open_portaudio()
    try:
        devices = list_input_devices(pa)
    finally:
        pa.terminate()
    if not devices:
        raise DeviceError("no microphone found: connect one or start the sound server (PulseAudio/PipeWire)")
    print("microphones (pass the name or index to --mic):")
    for device in devices:
        print(device.describe())
    return 0


def _say(line: str) -> None:
    print(f"lipstream live: {line}", file=sys.stderr, flush=True)
