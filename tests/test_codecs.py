"""The server's VP8 senders use lipstream's tuning on top of aiortc's own encoder settings, and the
stream they make still decodes to the picture that was sent."""

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from skimage import data

from lipstream.streaming.codecs import (
    CEILING_BPS_AT_SIDE,
    CEILING_SIDE_PX,
    TUNING,
    TunedH264Encoder,
    TunedVp8Encoder,
    _TunedContext,
    bitrate_ceiling,
    tune_vp8,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
FRAMES = 50
SETTLED = 10  # frames before the rate control settles after the keyframe
MIN_PSNR_DB = 25.0  # a whole detailed photo moving every frame, at 500 kbps


def moving_frames(count: int = FRAMES, side: int = 512) -> list[av.VideoFrame]:
    """A real photo (`side` px) shifting a pixel a frame, as I420 with RTP timestamps."""
    photo = cv2.resize(np.ascontiguousarray(data.astronaut()), (side, side), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
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
    context.options = {"cpu-used": "-6", "noise-sensitivity": "4", "static-thresh": "1",  # as aiortc
                       "deadline": "realtime"}
    context.thread_count = 4
    assert context.options == {"cpu-used": str(TUNING.cpu_used),
                               "noise-sensitivity": str(TUNING.noise_sensitivity),
                               "static-thresh": str(TUNING.static_thresh), "deadline": "realtime"}
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
    encoder.target_bitrate = 300_000  # REMB lowered it: aiortc makes a new codec context
    encoder.encode(frames[1])
    assert isinstance(encoder.codec, _TunedContext)
    assert encoder.codec.bit_rate == 300_000


def remb_asks(encoder: TunedVp8Encoder | TunedH264Encoder, side: int, bitrate: int) -> int:
    """What the encoder encodes a `side` px frame at once a receiver's REMB asked for `bitrate`
    (aiortc's sender assigns the estimate to `target_bitrate`)."""
    frames = moving_frames(2, side)
    encoder.encode(frames[0])
    encoder.target_bitrate = bitrate
    encoder.encode(frames[1])
    assert encoder.target_bitrate == encoder.codec.bit_rate
    return int(encoder.codec.bit_rate)


@pytest.mark.parametrize("make", [TunedVp8Encoder, TunedH264Encoder], ids=["vp8", "h264"])
def test_remb_cannot_push_a_face_over_the_ceiling(make: type[TunedVp8Encoder | TunedH264Encoder]) -> None:
    """aiortc follows REMB up to 1.5 Mbit/s; a 512 px face stops at the ceiling, other sizes at
    the same bits per pixel, and a receiver's lower estimate (congestion) still lowers it."""
    assert bitrate_ceiling(CEILING_SIDE_PX**2) == CEILING_BPS_AT_SIDE
    assert remb_asks(make(), CEILING_SIDE_PX, 1_500_000) == CEILING_BPS_AT_SIDE
    assert remb_asks(make(), 640, 1_500_000) == bitrate_ceiling(640**2) > CEILING_BPS_AT_SIDE
    assert remb_asks(make(), CEILING_SIDE_PX, 300_000) == 300_000  # a fall deeper than a wobble


def test_a_new_picture_size_gets_its_own_ceiling() -> None:
    """The estimate a receiver asked for is kept: a larger picture may use more of it."""
    encoder = TunedVp8Encoder()
    assert remb_asks(encoder, 256, 1_500_000) == bitrate_ceiling(256**2)
    encoder.encode(moving_frames(1, 640)[0])
    assert encoder.codec.bit_rate == bitrate_ceiling(640**2)


def test_the_rate_a_sender_moves_to_is_in_the_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    """What each sender really encodes at, for `lipstream -v serve` (said when it moves)."""
    caplog.set_level("DEBUG", logger="lipstream.streaming.sendrate")
    remb_asks(TunedVp8Encoder(), CEILING_SIDE_PX, 1_500_000)
    said = [r.getMessage() for r in caplog.records if r.name == "lipstream.streaming.sendrate"]
    assert said == [f"video sender at {CEILING_BPS_AT_SIDE} bit/s (receiver's estimate 1500000, "
                    f"ceiling {CEILING_BPS_AT_SIDE})"]
