"""H.264 for the server's senders and for files: libx264 on the CPU (tested here end to end with
real aiortc peers), NVENC when a GPU's FFmpeg can open it (marker `gpu`), and how `--video-codec`
is resolved."""

import asyncio
import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.h264 import h264_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from skimage import data

from lipstream.cli import build_parser
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE, VIDEO_FPS
from lipstream.engine.engine import Engine
from lipstream.streaming.client import Publisher, realtime_fps, transport_offsets_s
from lipstream.streaming.codecs import (
    CEILING_BPS_AT_SIDE,
    H264_TUNING,
    NVENC_OPTIONS,
    H264Tuning,
    TunedH264Encoder,
    _TunedContext,
    tune_encoders,
)
from lipstream.streaming.encoders import H264, LIBX264, NVENC, VP8, choose_video_codec, probe_nvenc
from lipstream.streaming.files import Mp4Writer
from lipstream.streaming.server import ServeConfig, _serve_config
from tests.serving import SILENCE, publish, serving, still_streaming
from tests.test_render_cli import _write_wav as write_wav
from tests.test_render_cli import lipstream as run_cli

H264_CODEC = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
FRAMES = 50
SETTLED = 10  # frames before the rate control settles after the keyframe
MIN_PSNR_DB = 25.0  # a whole detailed photo moving every frame, at VP8's 500 kbps
STREAM_S = 6.0  # the aiortc session: long enough for a rate and an A/V offset


pytestmark = pytest.mark.usefixtures("loopback")


def moving_frames(count: int = FRAMES) -> list[av.VideoFrame]:
    """A real photo (512 px) shifting a pixel a frame, as I420 with RTP timestamps."""
    photo = np.ascontiguousarray(data.astronaut())
    frames = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.roll(photo, i, axis=1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3600, Fraction(1, 90000)
        frames.append(frame)
    return frames


def encode_and_decode(encoder: TunedH264Encoder,
                      keyframe_at: int | None = None) -> tuple[list[float], list[bool]]:
    """PSNR (dB) of each decoded frame against the one sent, and which frames were keyframes."""
    decoder = av.CodecContext.create("h264", "r")
    scores, keys = [], []
    for index, frame in enumerate(moving_frames()):
        payloads, _ = encoder.encode(frame, force_keyframe=index == keyframe_at)
        packet = av.Packet(b"".join(h264_depayload(p) for p in payloads))
        decoded = decoder.decode(packet)
        assert len(decoded) == 1, f"frame {index} came out {len(decoded)} frames later: no zero latency"
        keys.append(decoded[0].key_frame)
        scores.append(cv2.PSNR(frame.to_ndarray(format="rgb24"), decoded[0].to_ndarray(format="rgb24")))
    return scores, keys


def test_h264_senders_get_the_tuned_encoder() -> None:
    tune_encoders()
    tune_encoders()  # idempotent
    encoder = get_encoder(H264_CODEC)
    assert isinstance(encoder, TunedH264Encoder) and encoder.tuning.encoder == LIBX264


def test_the_h264_stream_decodes_keys_only_when_asked_and_keeps_vp8_rates() -> None:
    encoder = TunedH264Encoder()
    scores, keys = encode_and_decode(encoder, keyframe_at=30)
    assert min(scores[SETTLED:]) >= MIN_PSNR_DB, f"PSNR {min(scores[SETTLED:]):.1f} dB"
    assert [i for i, key in enumerate(keys) if key] == [0, 30]  # x264 alone would key every 250
    context = encoder.codec
    assert context.profile == "Baseline" and context.framerate == VIDEO_FPS and context.gop_size == 3000
    assert context.bit_rate == 500_000 and context.thread_count == 1  # VP8's start, one thread
    encoder.target_bitrate = 10_000_000
    assert encoder.target_bitrate == CEILING_BPS_AT_SIDE  # VP8's ceiling, not aiortc's H.264 3 Mbit/s


def test_a_new_bitrate_from_the_receiver_gets_a_new_tuned_encoder() -> None:
    """aiortc rebuilds the encoder when the receiver's estimate moves the rate by over 10%."""
    encoder, frames = TunedH264Encoder(), moving_frames(3)
    encoder.encode(frames[0])
    encoder.target_bitrate = 300_000  # lower: a receiver short of bandwidth
    encoder.encode(frames[1])
    context = encoder.codec
    assert context.bit_rate == 300_000 and context.gop_size == H264_TUNING.gop_frames
    assert context.thread_count == H264_TUNING.threads and context.framerate == VIDEO_FPS


def test_the_tuning_takes_over_aiortcs_x264_options() -> None:
    context = _TunedContext(H264_TUNING.context(av.CodecContext.create(LIBX264, "w")), H264_TUNING)
    context.bit_rate = 500_000
    context.options = {"level": "31", "tune": "zerolatency"}  # as aiortc assigns them, before opening
    assert context.options == {"level": "31", "tune": "zerolatency", "preset": H264_TUNING.x264_preset,
                               "maxrate": "500000", "bufsize": "500000"}


def test_the_h264_stream_is_constrained_baseline_level_3_1() -> None:
    """What browsers offer as 42e01f: profile_idc 66 with constraint_set1, level_idc 31."""
    payloads, _ = TunedH264Encoder().encode(moving_frames(1)[0])
    stream = b"".join(h264_depayload(p) for p in payloads)
    sps = stream[stream.index(b"\x00\x00\x00\x01\x67") + 5:]  # after the start code and NAL header
    assert sps[0] == 66 and sps[1] & 0x40 and sps[2] == 31, sps[:3].hex()


async def test_an_h264_server_sends_h264_at_25_fps_with_its_audio(avatar: Avatar) -> None:
    config = ServeConfig(max_sessions=1, loopback_ice=False, video_codec=H264)
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)  # offers VP8 first, as browsers do
        await asyncio.sleep(STREAM_S)
        await publisher.stop(http)
    assert sending_codec(publisher) == "video/H264"
    received = publisher.received
    assert len(received.video_pts) >= (STREAM_S - 2) * VIDEO_FPS
    assert realtime_fps(received) >= 24.0, f"{realtime_fps(received):.2f} fps"
    median_ms = float(np.median(transport_offsets_s(received))) * 1000
    assert abs(median_ms) <= 20, f"picture {median_ms:+.1f} ms after its sound"


def sending_codec(publisher: Publisher) -> str:
    """What the server's video sender sends: the first codec of the answer's video m-line."""
    video = str(publisher.pc.remoteDescription.sdp).split("m=video")[1]
    first = video.split("\r\n")[0].split()[2]  # " PORT PROTO PT PT..."
    name = video.split(f"a=rtpmap:{first} ")[1].split("/")[0]
    return f"video/{name}"


async def test_an_offer_without_h264_gets_vp8_from_an_h264_server(avatar: Avatar) -> None:
    config = ServeConfig(max_sessions=1, loopback_ice=False, video_codec=H264)
    async with serving(config, avatar) as (server, http):
        publisher = await publish(server, http, SILENCE, video_codec="video/VP8")
        assert await still_streaming(publisher)
        await publisher.stop(http)
    assert sending_codec(publisher) == "video/VP8"


async def test_the_default_server_still_sends_vp8(avatar: Avatar) -> None:
    async with serving(ServeConfig(max_sessions=1, loopback_ice=False), avatar) as (server, http):
        publisher = await publish(server, http, SILENCE)
        assert await still_streaming(publisher)
        await publisher.stop(http)
    assert sending_codec(publisher) == "video/VP8"


def test_nvenc_is_not_chosen_without_a_gpu_and_the_choice_says_why() -> None:
    probe = probe_nvenc()
    if probe.usable:
        pytest.skip("this machine's FFmpeg opens NVENC (a GPU is present)")
    assert NVENC in probe.reason  # e.g. "... does not open (Cannot load libcuda.so.1)"
    for requested in ("auto", VP8, H264):
        choice = choose_video_codec(requested, "auto", "cpu")
        assert choice.h264_encoder == LIBX264 and probe.reason in choice.reason
    assert choose_video_codec("auto", "auto", "cpu").codec == VP8
    assert choose_video_codec("auto", "auto", "cuda").codec == VP8  # a GPU whose NVENC does not open


def test_auto_picks_nvenc_h264_on_a_gpu_whose_ffmpeg_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision alone (no GPU here: the probe's answer is given)."""
    from lipstream.streaming import encoders

    monkeypatch.setattr(encoders, "probe_nvenc", lambda: encoders.NvencProbe(True, "h264_nvenc opens"))
    assert choose_video_codec("auto", "auto", "cuda") == encoders.VideoCodecChoice(
        H264, NVENC, "GPU in use and h264_nvenc opens")
    assert choose_video_codec(VP8, "cuda", "cuda").codec == VP8
    assert choose_video_codec("auto", "auto", "cpu").h264_encoder == LIBX264  # no GPU in use
    assert choose_video_codec("auto", "cpu", "cpu").h264_encoder == LIBX264  # asked for the CPU


def test_the_cpu_device_never_probes_nvenc(monkeypatch: pytest.MonkeyPatch) -> None:
    from lipstream.streaming import encoders

    def probe() -> encoders.NvencProbe:
        raise AssertionError("--device cpu must not touch the GPU")

    monkeypatch.setattr(encoders, "probe_nvenc", probe)
    assert choose_video_codec(H264, "cpu", "cpu").h264_encoder == LIBX264


def test_nvenc_settings_are_low_latency_baseline_and_replace_x264s() -> None:
    tuning = H264Tuning(encoder=NVENC)
    options = tuning.options(800_000)
    assert options == {**NVENC_OPTIONS, "maxrate": "800000", "bufsize": "800000"}
    assert "tune" in options and options["tune"] == "ull"  # not x264's "zerolatency", which NVENC refuses
    context = tuning.context(av.CodecContext.create("libx264", "w"))
    assert context.name == NVENC and context.gop_size == tuning.gop_frames


@pytest.mark.gpu
def test_nvenc_encodes_a_stream_that_decodes() -> None:
    probe = probe_nvenc()
    if not probe.usable:
        pytest.skip(f"needs an NVIDIA GPU whose FFmpeg opens NVENC: {probe.reason}")
    encoder = TunedH264Encoder()
    encoder.tuning = H264Tuning(encoder=NVENC)
    scores, keys = encode_and_decode(encoder, keyframe_at=30)
    assert min(scores[SETTLED:]) >= MIN_PSNR_DB and [i for i, k in enumerate(keys) if k] == [0, 30]


@pytest.mark.gpu
def test_nvenc_writes_a_file_that_decodes(tmp_path: Path) -> None:
    probe = probe_nvenc()
    if not probe.usable:
        pytest.skip(f"needs an NVIDIA GPU whose FFmpeg opens NVENC: {probe.reason}")
    out = tmp_path / "nvenc.mp4"
    with Mp4Writer(out, 512, encoder=NVENC) as writer:
        for index, frame in enumerate(moving_frames()):
            writer.write_video(frame.to_ndarray(format="rgb24"), index)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES


def test_the_serve_command_takes_video_codec_with_the_config_default() -> None:
    args = build_parser("serve").parse_args(["serve", "--video-codec", "h264", "--device", "cpu"])
    assert _serve_config(args).video_codec == H264
    assert build_parser("serve").parse_args(["serve"]).video_codec == ServeConfig().video_codec


def test_render_writes_h264_and_says_which_encoder_and_why(tmp_path: Path) -> None:
    """The real CLI, `--device auto` on this GPU-less machine: libx264, and the reason in one line."""
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    audio, out = write_wav(tmp_path / "tone.wav", tone), tmp_path / "out.mp4"
    result = run_cli("render", "--no-progress", "--size", "256", "--video-codec", "h264",
                       "--audio", str(audio), "--out", str(out))
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "lipstream video:" in line]
    assert len(said) == 1 and f"files {LIBX264}" in said[0], result.stderr
    if not probe_nvenc().usable:
        assert probe_nvenc().reason in said[0]
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == VIDEO_FPS
    refused = run_cli("render", "--video-codec", "vp8", "--audio", str(audio), "--out", str(out))
    assert refused.returncode == 2 and "invalid choice: 'vp8'" in refused.stderr  # files are H.264


def test_an_unknown_codec_is_refused_in_one_line() -> None:
    from lipstream.streaming.encoders import VideoCodecError

    with pytest.raises(VideoCodecError, match="use one of auto, vp8, h264"):
        choose_video_codec("av1", "cpu", "cpu")


def test_the_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from lipstream.streaming.encoders import resolve_video_codec

    resolve_video_codec.cache_clear()
    with caplog.at_level(logging.INFO, logger="lipstream.streaming.encoders"):
        resolve_video_codec(H264, "cpu", "cpu")
        resolve_video_codec(H264, "cpu", "cpu")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["lipstream video: WebRTC sends h264 (libx264), files libx264 "
                     "(asked for h264; device cpu: H.264 by libx264)"]


def test_the_start_up_capacity_estimate_times_the_h264_encoder(avatar: Avatar) -> None:
    """`serve --video-codec h264` without --max-sessions times an H.264 sender at start-up."""
    from lipstream.streaming.capacity import estimate_capacity

    tune_encoders()
    capacity = estimate_capacity(Engine(avatar), 2, H264)
    assert capacity.encode_ms > 0 and capacity.max_sessions >= 1
