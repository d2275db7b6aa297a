"""File sink: frames and their audio -> an mp4 (H.264 + AAC) with PyAV.

H.264 by libx264, or by NVENC on a GPU whose FFmpeg opens it (encoders.py chooses). NVENC's
constant-quality mode takes `cq` where x264 takes `crf`; both scales run 0-51, lower is better.
"""

import contextlib
import io
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, VIDEO_FPS
from lipstream.errors import LipstreamError
from lipstream.streaming.encoders import LIBX264, NVENC


class OutputError(LipstreamError):
    """An output file that cannot be written."""


def check_video_out(path: Path) -> None:
    """Fail before any work is done if `path` cannot be created or its kind of file (by its name)
    cannot hold H.264 and AAC: a .txt, a .webm, a name without a suffix."""
    trial = _NamedBuffer(path.name)
    try:  # in memory: FFmpeg picks the container from the name, as it will for the file
        with av.open(trial, "w") as container:
            container.add_stream("h264", rate=VIDEO_FPS)
            container.add_stream("aac", rate=SAMPLE_RATE)
    except (ValueError, av.FFmpegError) as exc:
        raise OutputError(f"cannot write a video to {path} ({exc}): name it .mp4") from None
    check_writable(path)


class _NamedBuffer(io.BytesIO):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # what PyAV hands FFmpeg to guess the container from


def check_writable(path: Path) -> None:
    """Fail before any work is done if `path` cannot be created."""
    if path.is_dir():
        raise OutputError(f"output is a directory: {path} (give a file name such as out.mp4)")
    if not path.parent.is_dir():
        raise OutputError(f"output folder does not exist: {path.parent}")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    if not existed:  # leave nothing behind if a later step fails
        path.unlink()


def file_options(encoder: str, crf: int) -> dict[str, object]:
    """Constant quality `crf` for a file, at a speed that keeps `render` faster than real time."""
    if encoder == NVENC:  # "p4": NVENC's middle preset; it is far faster than real time anyway
        return {"rc": "vbr", "cq": str(crf), "preset": "p4"}
    return {"crf": str(crf), "preset": "veryfast"}


class Mp4Writer:
    """Writes frame n at pts n (1/25 s) and the audio it was made from at pts 640 n (1/16000 s)."""

    def __init__(self, path: Path, size: int, crf: int = 20, encoder: str = LIBX264) -> None:
        check_video_out(path)
        self.path = path
        self._failed = False  # a write failed (disk full): the file cannot be finished
        self._closed = False
        try:
            self._container = av.open(str(path), "w")
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot write {path}: {exc}") from None
        video = self._container.add_stream(encoder, rate=VIDEO_FPS)
        assert isinstance(video, av.VideoStream)  # `encoder` names a video encoder
        self._video = video
        self._video.width = self._video.height = size
        self._video.pix_fmt = "yuv420p"
        self._video.options = file_options(encoder, crf)
        self._audio = self._container.add_stream("aac", rate=SAMPLE_RATE)
        self._audio.layout = "mono"

    def write_video(self, image: np.ndarray, index: int) -> None:
        """(S, S, 3) uint8 RGB, converted to I420 by FFmpeg's swscale."""
        self._encode(av.VideoFrame.from_ndarray(image, format="rgb24"), index)

    def write_i420(self, yuv: np.ndarray, index: int) -> None:
        """(S * 3 // 2, S) uint8 I420 (an engine Frame's `yuv`), encoded as it is: no conversion."""
        self._encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p"), index)

    def _encode(self, frame: av.VideoFrame, index: int) -> None:
        frame.pts = index
        self._mux(self._video.encode(frame))

    def write_audio(self, samples: np.ndarray, start_sample: int) -> None:
        if samples.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start_sample
        self._mux(self._audio.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except (OSError, av.FFmpegError) as exc:
            self._failed = True
            raise self._write_error(exc) from None

    def _write_error(self, exc: Exception) -> OutputError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return OutputError(f"cannot write {self.path}: {reason}; the unfinished file was removed")

    def close(self) -> None:
        """Flush the encoders and finish the file; after a failed write, remove it instead (it has
        no index, so no player opens it). Safe to call twice."""
        if self._closed:
            return
        try:
            if not self._failed:
                self._mux(self._video.encode(None))
                self._mux(self._audio.encode(None))
        finally:
            self._release()

    def _release(self) -> None:
        # never mux again once a write failed: FFmpeg crashes the process (SIGSEGV) on it
        self._closed = True
        try:
            self._container.close()
        except (OSError, av.FFmpegError) as exc:  # the trailer's write, on a disk now full
            self._failed = True
            raise self._write_error(exc) from None
        finally:
            if self._failed:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
        elif not self._closed:
            with contextlib.suppress(OutputError):  # the error in flight is the one to report
                self._release()
