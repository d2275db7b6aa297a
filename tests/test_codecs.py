"""The server's VP8 senders use lipstream's tuning on top of aiortc's own encoder settings, and the
stream they make still decodes to the picture that was sent."""

from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from skimage import data

from lipstream.streaming.codecs import TUNING, TunedVp8Encoder, _TunedContext, tune_vp8

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
FRAMES = 50
SETTLED = 10  # frames before the rate control settles after the keyframe
MIN_PSNR_DB = 25.0  # a whole detailed photo moving every frame, at 500 kbps


def moving_frames() -> list[av.VideoFrame]:
    """A real photo (512 px) shifting a pixel a frame, as I420 with RTP timestamps."""
    photo = np.ascontiguousarray(data.astronaut())
    frames = []
    for i in range(FRAMES):
        frame = av.VideoFrame.from_ndarray(np.roll(photo, i, axis=1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3600, Fraction(1, 90000)
        frames.append(frame)
    return frames


def test_senders_get_the_tuned_encoder() -> None:
    tune_vp8()
    tune_vp8()  # idempotent
    assert isinstance(get_encoder(VP8), TunedVp8Encoder)


def test_tuning_overrides_only_its_own_settings() -> None:
    context = _TunedContext(av.CodecContext.create("libvpx", "w"), TUNING)
    context.options = {"cpu-used": "-6", "noise-sensitivity": "4", "deadline": "realtime"}  # as aiortc
    context.thread_count = 4
    assert context.options == {"cpu-used": str(TUNING.cpu_used),
                               "noise-sensitivity": str(TUNING.noise_sensitivity), "deadline": "realtime"}
    assert context.thread_count == TUNING.threads


def psnr_of_stream(encoder: Vp8Encoder) -> list[float]:
    """PSNR (dB) of each decoded frame against the frame sent."""
    decoder = av.CodecContext.create("vp8", "r")
    scores = []
    for frame in moving_frames():
        payloads, _ = encoder.encode(frame)
        decoded = decoder.decode(av.Packet(b"".join(vp8_depayload(p) for p in payloads)))
        assert len(decoded) == 1
        scores.append(cv2.PSNR(frame.to_ndarray(format="rgb24"), decoded[0].to_ndarray(format="rgb24")))
    return scores


def test_tuned_stream_is_as_good_as_aiortcs() -> None:
    """The faster settings keep the picture when all of it moves (libvpx's fastest speed, -16,
    loses ~7 dB here: its motion search gives up)."""
    tuned, plain = psnr_of_stream(TunedVp8Encoder()), psnr_of_stream(Vp8Encoder())
    assert min(tuned[SETTLED:]) >= MIN_PSNR_DB, tuned
    assert np.mean(tuned[SETTLED:]) >= np.mean(plain[SETTLED:]) - 0.5, (tuned, plain)


def test_a_bitrate_change_rebuilds_a_tuned_context() -> None:
    encoder = TunedVp8Encoder()
    frames = moving_frames()
    encoder.encode(frames[0])
    encoder.target_bitrate = 1_000_000  # REMB raised it: aiortc makes a new codec context
    encoder.encode(frames[1])
    assert isinstance(encoder.codec, _TunedContext)
    assert encoder.codec.bit_rate == 1_000_000
