"""Which video encoders a process uses: `--video-codec auto|vp8|h264`, resolved once at start.

WebRTC senders send VP8 (libvpx) or H.264; H.264 is encoded by NVIDIA's NVENC (`h264_nvenc`) when
the engine runs on a GPU and PyAV's FFmpeg can open that encoder, else by libx264 on the CPU.
`render` always writes H.264, with the same H.264 encoder. "auto" sends H.264 only when NVENC takes
the encoding off the CPU; on the CPU VP8 stays the default (measured in `benchmarks/codecs.py`).

NVENC is probed by opening a real encoder, not by its name: PyAV's wheels list `h264_nvenc` on
every machine, and only opening it finds out whether a driver and a GPU are there. The probe runs
only when the device is not "cpu" (which touches nothing GPU-related), and says why in one line.
"""

import argparse
import functools
import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import av.logging
from av.video.codeccontext import VideoCodecContext

from lipstream.engine.constants import VIDEO_FPS
from lipstream.errors import LipstreamError

log = logging.getLogger(__name__)

VP8, H264 = "vp8", "h264"
VIDEO_CODECS = ("auto", VP8, H264)
CLI_VIDEO_CODEC = "auto"  # what the commands ask for unless told: H.264 on a GPU's NVENC, else VP8
LIBVPX, LIBX264, NVENC = "libvpx", "libx264", "h264_nvenc"  # FFmpeg encoder names
PROBE_SIDE_PX = 256  # NVENC refuses very small pictures; a session's frame is 256-640 px
MIME_TYPES = {VP8: "video/VP8", H264: "video/H264"}


class VideoCodecError(LipstreamError):
    """A video codec that cannot be used as asked."""


@dataclass(frozen=True)
class NvencProbe:
    usable: bool
    reason: str  # one phrase: why it can or cannot be used


@dataclass(frozen=True)
class VideoCodecChoice:
    codec: str  # VP8 or H264: what WebRTC senders prefer (an offer without it gets the other)
    h264_encoder: str  # LIBX264 or NVENC: who encodes H.264, for senders and for `render`
    reason: str  # one phrase: why

    def describe(self) -> str:
        webrtc = f"{self.codec} ({LIBVPX if self.codec == VP8 else self.h264_encoder})"
        return f"video: WebRTC sends {webrtc}, files {self.h264_encoder} ({self.reason})"


def add_video_codec_argument(parser: argparse.ArgumentParser) -> None:
    """`serve`'s `--video-codec`, beside `--device`."""
    parser.add_argument("--video-codec", choices=VIDEO_CODECS, default=CLI_VIDEO_CODEC,
                        help="video the server sends: 'auto' (H.264 when a GPU's NVENC encodes it, "
                        "else VP8), 'vp8' or 'h264' (libx264 on the CPU, NVENC on a GPU); offers "
                        f"without it get the other; default {CLI_VIDEO_CODEC}")


def add_file_codec_argument(parser: argparse.ArgumentParser) -> None:
    """`render`'s `--video-codec`: files are always H.264, so only who encodes it varies."""
    parser.add_argument("--video-codec", choices=(CLI_VIDEO_CODEC, H264), default=CLI_VIDEO_CODEC,
                        help="the file's video: H.264 by NVENC when a GPU's FFmpeg opens it, else by "
                        f"libx264 ('auto' and 'h264' alike); default {CLI_VIDEO_CODEC}")


@functools.cache
def probe_nvenc() -> NvencProbe:
    """Whether PyAV's FFmpeg has `h264_nvenc` and can open it here (at most once per process)."""
    if NVENC not in av.codecs_available:
        return NvencProbe(False, f"PyAV's FFmpeg has no {NVENC}")
    context = av.CodecContext.create(NVENC, "w")
    assert isinstance(context, VideoCodecContext)
    context.width = context.height = PROBE_SIDE_PX
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, VIDEO_FPS)
    failed = _open_quietly(context)
    if failed is not None:
        return NvencProbe(False, f"{NVENC} is in PyAV's FFmpeg but does not open ({failed})")
    return NvencProbe(True, f"{NVENC} opens")


def _open_quietly(context: av.CodecContext) -> str | None:
    """Open `context`; None, or FFmpeg's own reason (its log says e.g. which library is missing)."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg logs nothing to Python unless a level is set
    try:
        with av.logging.Capture() as logged:
            context.open()
    except av.FFmpegError as exc:
        said = "; ".join(str(entry[2]).strip() for entry in logged)
        return said or str(exc.strerror)
    finally:
        av.logging.set_level(previous)
    return None


def choose_video_codec(requested: str, requested_device: str, device: str) -> VideoCodecChoice:
    """The codec for `requested`, with the engine asked for `requested_device` running on `device`
    ("cpu" or "cuda"); the NVENC probe runs unless the CPU was asked for."""
    if requested not in VIDEO_CODECS:
        raise VideoCodecError(f"unknown video codec {requested!r}: use one of {', '.join(VIDEO_CODECS)}")
    if requested_device == "cpu":
        return _choice(requested, LIBX264, "device cpu: H.264 by libx264")
    nvenc = probe_nvenc()
    if device == "cuda" and nvenc.usable:
        return _choice(requested, NVENC, f"GPU in use and {nvenc.reason}")
    where = "no GPU in use" if device != "cuda" else "GPU in use"
    return _choice(requested, LIBX264, f"{where}; {nvenc.reason}; H.264 by libx264")


def _choice(requested: str, h264_encoder: str, reason: str) -> VideoCodecChoice:
    if requested == "auto":  # H.264 only where it costs the CPU nothing
        return VideoCodecChoice(H264 if h264_encoder == NVENC else VP8, h264_encoder, reason)
    return VideoCodecChoice(requested, h264_encoder, f"asked for {requested}; {reason}")


@functools.cache
def resolve_video_codec(requested: str, requested_device: str, device: str) -> VideoCodecChoice:
    """`choose_video_codec`, said in one log line the first time."""
    choice = choose_video_codec(requested, requested_device, device)
    log.info("lipstream %s", choice.describe())
    return choice
