"""Where `lipstream live` sends its frames: the FrameSink seam, and an mp4 file sink.

The virtual camera (vcam.py) is the other implementation.
"""

from pathlib import Path
from typing import Protocol

from lipstream.engine.constants import SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.encoders import LIBX264
from lipstream.streaming.files import Mp4Writer
from lipstream.streaming.worker import EngineFrame


class FrameSink(Protocol):
    def send(self, frame: EngineFrame) -> None: ...

    def close(self) -> None: ...


class Mp4Sink:
    """Frames and the audio they were made from -> an mp4, both stamped from the frame index, so
    the file is in sync whatever the wall clock did."""

    def __init__(self, path: Path, size: int, encoder: str = LIBX264) -> None:
        self.path = path
        self._writer: Mp4Writer | None = Mp4Writer(path, size, encoder=encoder)

    def send(self, frame: EngineFrame) -> None:
        assert self._writer is not None, "send after close"
        self._writer.write_i420(frame.yuv, frame.index)  # as drawn on a GPU: no RGB round trip
        self._writer.write_audio(frame.audio, frame.index * SAMPLES_PER_VIDEO_FRAME)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
