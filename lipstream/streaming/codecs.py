"""Encoder settings for the server's video senders (VP8 and H.264), chosen for rendered faces.

aiortc builds its libvpx encoder lazily inside `Vp8Encoder.encode`, with settings meant for camera
video and no public way to change them. `tune_vp8()` makes aiortc create `TunedVp8Encoder` instead:
the same encoder (aiortc's own code runs unchanged), whose codec context takes `Vp8Tuning`'s values
over aiortc's whenever aiortc assigns its options and thread count. Everything else (bitrate control,
keyframes, packetisation) stays aiortc's.

Why these values (measured by `benchmarks/vp8.py`; figures in `docs/profile.md`):
- noise_sensitivity 0: aiortc asks for libvpx's temporal denoiser (4), which filters sensor noise
  out of camera frames; rendered frames carry none, so it only costs CPU (and blurs the skin).
- cpu_used -12: libvpx's realtime speed (negative: a fixed speed, larger is faster); aiortc uses -6.
  With the denoiser off it still decodes closer to the sent frames than aiortc's settings do.
  -16 is cheaper still but loses ~7 dB as soon as the whole picture moves (its motion search
  gives up), so it is not used.
- static_thresh 500: libvpx skips a 16x16 block whose change since the last frame is below this
  (aiortc's 1 skips almost none). Most of a talking face is still from one frame to the next, so
  this costs 25% less CPU per frame at the 512 px ceiling, at 0.3 dB, and close-ups of the mouth
  cannot be told apart; 1000 loses 0.9 dB for little more.
- threads 1: a session is one of many on the machine; a second encoder thread per session only
  adds contention (aiortc already picks 1 below 640x480, but more on a large machine above it).
- the rate: under a ceiling for a face, and held while the receiver's estimate wobbles
  (`sendrate.py`): each move of over 10% makes aiortc build a new encoder (a keyframe).

H.264 the same way: `use_h264(encoder)` makes aiortc create `TunedH264Encoder`, aiortc's own
`H264Encoder` (its packetisation, bitrate estimate and keyframe requests) whose codec context is
libx264 or NVENC with `H264Tuning`'s options, set like aiortc's VP8 ones (see `H264Tuning`).
Which codec a sender sends is chosen per answer: `video_preferences` for `setCodecPreferences`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiortc.codecs
import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import DEFAULT_BITRATE as VP8_DEFAULT_BITRATE
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtpsender import RTCRtpSender

from lipstream.engine.constants import VIDEO_FPS
from lipstream.streaming.encoders import LIBX264, MIME_TYPES, NVENC
from lipstream.streaming.sendrate import CEILING_BPS_AT_SIDE as CEILING_BPS_AT_SIDE  # for callers
from lipstream.streaming.sendrate import CEILING_SIDE_PX as CEILING_SIDE_PX
from lipstream.streaming.sendrate import MAX_BITS_PER_PIXEL, HeldRate, RateHold
from lipstream.streaming.sendrate import bitrate_ceiling as bitrate_ceiling


@dataclass(frozen=True)
class Vp8Tuning:
    cpu_used: int = -12  # libvpx realtime speed, -16 (fastest) .. 16; aiortc's own is -6
    noise_sensitivity: int = 0  # temporal denoiser strength, 0 (off) .. 6; aiortc's own is 4
    static_thresh: int = 500  # a block changed less than this is not coded; aiortc's own is 1
    threads: int = 1  # encoder threads per sender
    max_bits_per_pixel: float = MAX_BITS_PER_PIXEL  # the rate ceiling, per pixel and frame
    rate_hold: RateHold = RateHold()  # when the rate follows the receiver's estimate

    def options(self) -> dict[str, str]:
        return {"cpu-used": str(self.cpu_used), "noise-sensitivity": str(self.noise_sensitivity),
                "static-thresh": str(self.static_thresh)}

    def assign(self, name: str, value: Any, context: Any) -> Any:
        """What the context gets when aiortc assigns `value` to `name`."""
        if name == "options":
            return {**value, **self.options()}
        if name == "thread_count":
            return self.threads
        return value


TUNING = Vp8Tuning()


class _TunedContext:
    """aiortc's codec context, taking the tuning's values whenever aiortc configures it."""

    def __init__(self, context: Any, tuning: "Vp8Tuning | H264Tuning") -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_tuning", tuning)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._context, name, self._tuning.assign(name, value, self._context))


class TunedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder with `TUNING` applied to each codec context it creates, its rate
    held under `bitrate_ceiling`."""

    tuning = TUNING

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._rate = HeldRate(VP8_DEFAULT_BITRATE, self.tuning.rate_hold, now)
        super().__init__()

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        self._rate.resize(frame.width * frame.height, self.tuning.max_bits_per_pixel)
        self.target_bitrate = self._rate.asked  # the ceiling of this size; a held fall expires
        return super().encode(frame, force_keyframe)

    @property
    def target_bitrate(self) -> int:
        return self._rate.target(self.tuning.max_bits_per_pixel)

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        sending = self._rate.ask(bitrate, self.tuning.max_bits_per_pixel)
        # aiortc's VP8 reads its own private copy for the rate buffer's size
        Vp8Encoder.target_bitrate.fset(self, sending)  # type: ignore[attr-defined]

    @property
    def codec(self) -> Any:
        return self._tuned

    @codec.setter
    def codec(self, context: Any) -> None:
        self._tuned = None if context is None else _TunedContext(context, self.tuning)


def tune_vp8() -> None:
    """Make every VP8 sender aiortc creates from now on use `TunedVp8Encoder` (idempotent)."""
    # aiortc.codecs.get_encoder looks the class up in its module at each call
    aiortc.codecs.Vp8Encoder = TunedVp8Encoder  # type: ignore[attr-defined]


def tune_encoders(h264_encoder: str = LIBX264) -> None:
    """Tune both codecs' senders; H.264 by `h264_encoder` (LIBX264 or NVENC) (idempotent)."""
    tune_vp8()
    use_h264(h264_encoder)


H264_LEVEL = "3.1"  # up to 720p30, so 512-640 px at 25 fps; every browser decodes 42e01f
X264_OPTIONS = {"tune": "zerolatency", "level": H264_LEVEL.replace(".", "")}
# NVENC's low-latency settings: no lookahead or reordering delay, and a forced keyframe is an IDR
# (a browser asking for one with PLI must get a frame it can start decoding from).
NVENC_OPTIONS = {"preset": "p1", "tune": "ull", "rc": "cbr", "zerolatency": "1", "delay": "0",
                 "forced-idr": "1", "profile": "baseline", "level": H264_LEVEL, "bf": "0"}


@dataclass(frozen=True)
class H264Tuning:
    """libx264 or NVENC settings chosen as aiortc chooses VP8's: a constant rate with a one-second
    buffer, keyframes only at the start and when the receiver asks, one thread per sender."""

    encoder: str = LIBX264  # or NVENC
    # VP8's CPU per frame and picture at 512 px (benchmarks/codecs.py); aiortc leaves x264's
    # "medium" with a thread per core; "veryfast" costs 1.5x, "ultrafast" loses ~2 dB.
    x264_preset: str = "superfast"
    gop_frames: int = 3000  # aiortc's VP8 kf_max_dist (2 min at 25 fps): keyframes on PLI
    buffer_s: float = 1.0  # VBV buffer, as aiortc's VP8 rc_buf_sz (its "bufsize" = bitrate)
    threads: int = 1  # encoder threads per sender, as for VP8
    max_bits_per_pixel: float = MAX_BITS_PER_PIXEL  # the rate ceiling, as for VP8
    rate_hold: RateHold = RateHold()  # as for VP8 (aiortc's H.264 also rebuilds on 10% moves)

    def options(self, bit_rate: int) -> dict[str, str]:
        # maxrate = bit rate with a buffer: constant rate, as aiortc's VP8 (minrate = maxrate)
        rate = {"maxrate": str(bit_rate), "bufsize": str(round(bit_rate * self.buffer_s))}
        if self.encoder == NVENC:
            return {**NVENC_OPTIONS, **rate}
        return {**X264_OPTIONS, "preset": self.x264_preset, **rate}

    def context(self, created: Any) -> Any:
        """The codec context to use where aiortc created `created` (a libx264 one)."""
        context: Any = created if self.encoder == created.name else av.CodecContext.create(self.encoder, "w")
        context.gop_size = self.gop_frames  # aiortc sets neither: x264 would key every 10 s
        if self.encoder == LIBX264:
            context.thread_count = self.threads
        return context

    def assign(self, name: str, value: Any, context: Any) -> Any:
        """What the context gets when aiortc assigns `value` to `name`."""
        if name == "options":  # all of aiortc's libx264 options are in ours; NVENC takes none
            return self.options(context.bit_rate)
        if name == "framerate":  # aiortc says 30: x264 would give each frame 25/30 of its bits
            return Fraction(VIDEO_FPS)
        if name == "time_base":
            return Fraction(1, VIDEO_FPS)
        return value


H264_TUNING = H264Tuning()


class TunedH264Encoder(H264Encoder):
    """aiortc's H.264 encoder with `tuning`'s encoder and settings, at VP8's rates."""

    tuning = H264_TUNING

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._rate = HeldRate(VP8_DEFAULT_BITRATE, self.tuning.rate_hold, now)
        super().__init__()

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        self._rate.resize(frame.width * frame.height, self.tuning.max_bits_per_pixel)
        self.target_bitrate = self._rate.asked  # a held fall expires
        return super().encode(frame, force_keyframe)

    @property
    def codec(self) -> Any:
        return self._tuned

    @codec.setter
    def codec(self, context: Any) -> None:
        self._tuned = None if context is None else _TunedContext(self.tuning.context(context), self.tuning)

    @property
    def target_bitrate(self) -> int:
        return self._rate.target(self.tuning.max_bits_per_pixel)

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._rate.ask(bitrate, self.tuning.max_bits_per_pixel)


def use_h264(encoder: str = LIBX264) -> None:
    """Make every H.264 sender aiortc creates from now on a `TunedH264Encoder` on `encoder`."""
    TunedH264Encoder.tuning = H264Tuning(encoder=encoder)
    aiortc.codecs.H264Encoder = TunedH264Encoder  # type: ignore[attr-defined]


def video_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs with `codec` (VP8 or H264) first, for `setCodecPreferences`: the
    answer takes the first the offer has, so an offer without it still gets the other."""
    capabilities = RTCRtpSender.getCapabilities("video")
    assert capabilities is not None  # aiortc has capabilities for "video"
    first = MIME_TYPES[codec].lower()
    return sorted(capabilities.codecs, key=lambda c: c.mimeType.lower() != first)



OPUS_MIME_TYPE = "audio/opus"  # lower case: aiortc writes "audio/opus"


def audio_preferences() -> list[RTCRtpCodecCapability]:
    """Opus alone, for `setCodecPreferences`: the receive path decodes only Opus (rtpaudio.py) and
    the tracks send only Opus packets; an answer that also listed PCMU or G.722 let a peer whose
    offer puts one first (a telephony gateway) send it, and labelled our Opus with it."""
    capabilities = RTCRtpSender.getCapabilities("audio")
    assert capabilities is not None  # aiortc has capabilities for "audio"
    return [c for c in capabilities.codecs if c.mimeType.lower() == OPUS_MIME_TYPE]
