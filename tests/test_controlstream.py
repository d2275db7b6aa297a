"""The control stream: a message per video frame on the `lipstream.controls` data channel, in
order, on the video's own frame indices (checked by content: the mouth opens on the same index in
the picture and in the controls), read by an aiortc client and by headless Chromium."""

import asyncio
import base64
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE, VIDEO_PTS_PER_FRAME
from lipstream.engine.controls import CONTROL_NAMES, VISEMES
from lipstream.measure.mouth import MouthOpenDetector
from lipstream.streaming.client import PcmTrack, Publisher
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.controlstream import CONTROL_CHANNEL_LABEL, control_message
from lipstream.streaming.session import SessionConfig, new_peer_connection
from lipstream.streaming.worker import ProducerConfig
from tests.browser import chromium_executable, launch, write_fake_mic_wav
from tests.conftest import espeak_wav
from tests.serving import SDP, running_server, seams, serving

KEEP = 128  # received frames are kept at this side (cheaper to score)
MAX_LAG = 3  # frames either side searched for the best alignment
RTP_WRAP = 2**32  # RTP timestamps are 32-bit and start at a random value
PAGE = Path(__file__).parent / "data" / "controlstream.html"
PAGE_PATH = "/controlstream-test"  # served to Chromium by the test, on the server's own origin
# Frames started this early are all rendered, even on this shared box beside a Chromium decoding:
# a skipped render repeats the last picture while its message carries the new controls
# (worker.py), which says nothing about which index the picture belongs to.
GENEROUS_LEAD_MS = 120
CONFIG = ServeConfig(max_sessions=1, loopback_ice=False, session=SessionConfig(
    producer=ProducerConfig(lead_ms=GENEROUS_LEAD_MS, min_lead_ms=GENEROUS_LEAD_MS)))


pytestmark = pytest.mark.usefixtures("loopback")


@pytest.fixture(scope="module")
def sharp_openings(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Loud open vowels after silences: the mouth opens sharply on a few known frames."""
    speech = load_audio(espeak_wav(tmp_path_factory.mktemp("controls") / "ah.wav",
                                   "Ah! ... Mama. ... Ah! ... Papa. ... Ah!", "-g", "20"))
    return np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech])


def test_a_message_names_the_frame_its_controls_and_top_visemes() -> None:
    visemes = np.zeros(len(VISEMES), np.float32)
    visemes[VISEMES.index("aa")], visemes[VISEMES.index("E")], visemes[0] = 0.6, 0.3, 0.1
    message = json.loads(control_message(7, np.array([0.5, 0.1, 0, 0, 0.25], np.float32), visemes))
    assert message["frame"] == 7 and message["pts"] == 7 * VIDEO_PTS_PER_FRAME
    assert list(message["controls"]) == list(CONTROL_NAMES) and message["controls"]["jaw_open"] == 0.5
    assert [name for name, _ in message["visemes"]] == ["aa", "E", "sil"]


async def test_control_messages_line_up_with_the_video_frames(
        avatar: Avatar, sharp_openings: np.ndarray) -> None:
    pcm = sharp_openings
    async with serving(CONFIG, avatar) as (server, http):
        publisher = Publisher(server.url, pcm, keep_size=KEEP, controls=True)
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        await asyncio.sleep(pcm.size / SAMPLE_RATE + 1.0)
        await publisher.stop(http)
    messages = publisher.control_messages
    indices = assert_in_order(messages)
    # One per frame sent (a video track that fell 200 ms behind skips ahead, and so do its
    # messages: a busy machine may leave a gap).
    assert len(indices) >= 0.5 * (indices[-1] - indices[0] + 1)
    # A video frame's index from its timestamp: frame 0 (a keyframe) is the first the server sends.
    first_pts = publisher.received.video_pts[0]
    frames = {(pts - first_pts) // VIDEO_PTS_PER_FRAME: image
              for pts, image in zip(publisher.received.video_pts, publisher.received.images, strict=True)}
    assert_mouth_opens_on_the_same_index(avatar, frames, messages)


async def test_chromium_lines_up_the_control_stream_with_the_video_frames(
        avatar: Avatar, sharp_openings: np.ndarray, tmp_path: Path) -> None:
    chromium_executable()
    mic = write_fake_mic_wav(tmp_path / "mic.wav", np.concatenate([sharp_openings, np.zeros(SAMPLE_RATE)]))
    async with running_server(CONFIG, **seams(avatar)) as server:
        got = await run_in_chromium(server.url, tmp_path / "profile", mic, sharp_openings.size / SAMPLE_RATE)
    messages = [json.loads(text) for text in got["messages"]]
    indices = assert_in_order(messages)
    first = got["encoded"][0]
    assert first["key"], "the first video frame Chromium received is not the keyframe frame 0"
    video = {frame_index(e["rtp"], first["rtp"]) for e in got["encoded"]}
    sent = {i for i in video if indices[0] <= i <= indices[-1]}
    assert len(sent) > 50 and sent <= set(indices), sorted(sent - set(indices))  # every frame, its message
    frames = {frame_index(f["rtp"], first["rtp"]): decoded_image(f["rgb"]) for f in got["decoded"]}
    assert_mouth_opens_on_the_same_index(avatar, frames, messages)


async def run_in_chromium(url: str, profile: Path, mic: Path, speak_s: float) -> dict[str, Any]:
    """Chromium publishes the fake microphone from the test page (tests/data/controlstream.html)
    and returns what it received: control messages, encoded video frames, decoded frames."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await launch(playwright, profile, mic)
        try:
            page = await context.new_page()
            await page.route(re.compile(re.escape(url + PAGE_PATH)),
                             lambda route: route.fulfill(path=PAGE, content_type="text/html"))
            await page.goto(f"{url}{PAGE_PATH}?keep={KEEP}")
            await page.evaluate("start()")
            await page.wait_for_function("window.pc.connectionState === 'connected'", timeout=20_000)
            await asyncio.sleep(speak_s + 1.0)
            await page.evaluate("stop()")
            got: dict[str, Any] = await page.evaluate(
                "({messages: got.messages, encoded: got.encoded, decoded: decodedFrames()})")
            return got
        finally:
            await context.close()


def frame_index(rtp: int, first_rtp: int) -> int:
    """The video frame an RTP timestamp belongs to, counted from the first frame sent."""
    ticks = (rtp - first_rtp) % RTP_WRAP
    assert ticks % VIDEO_PTS_PER_FRAME == 0, ticks
    return ticks // VIDEO_PTS_PER_FRAME


def decoded_image(rgb_base64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(rgb_base64), np.uint8).reshape(KEEP, KEEP, 3)


def assert_in_order(messages: list[dict[str, Any]]) -> list[int]:
    """Frame indices of the messages: strictly increasing (no repeats, no disorder), pts to match."""
    indices = [m["frame"] for m in messages]
    assert len(indices) > 50 and all(b > a for a, b in zip(indices, indices[1:], strict=False))
    assert all(m["pts"] == m["frame"] * VIDEO_PTS_PER_FRAME for m in messages)
    return indices


def assert_mouth_opens_on_the_same_index(avatar: Avatar, frames: dict[int, np.ndarray],
                                         messages: list[dict[str, Any]]) -> None:
    """The mouth's opening in the pictures follows jaw_open in the messages best at lag 0."""
    jaw = {m["frame"]: m["controls"]["jaw_open"] for m in messages}
    assert max(jaw.values()) > 0.3  # it spoke
    common = sorted(set(frames) & set(jaw))
    assert len(common) > 50, (len(frames), len(jaw), sorted(frames)[:3], sorted(jaw)[:3])
    detector = MouthOpenDetector(avatar, KEEP)
    opened = np.array([detector.score(frames[i]) for i in common])
    controls = np.array([jaw[i] for i in common])
    by_lag = {lag: agreement(opened, controls, lag) for lag in range(-MAX_LAG, MAX_LAG + 1)}
    assert max(by_lag, key=by_lag.__getitem__) == 0, by_lag  # the mouth opens on the same index
    assert by_lag[0] > 0.7, by_lag


def agreement(opened: np.ndarray, controls: np.ndarray, lag: int) -> float:
    """Correlation of the pictures' mouth opening with the controls `lag` frames earlier."""
    if lag < 0:
        opened, controls = opened[:lag], controls[-lag:]
    elif lag > 0:
        opened, controls = opened[lag:], controls[:-lag]
    return float(np.corrcoef(opened, controls)[0, 1])


async def test_a_peer_whose_data_channel_takes_tiny_messages_still_gets_video(avatar: Avatar) -> None:
    """An offer with a=max-message-size:1 and the control channel open: the messages cannot be
    sent, and the video must not stop over it (once the video sender crashed on the first)."""
    async with serving(replace(CONFIG, max_sessions=2), avatar) as (server, http):
        pc = new_peer_connection()
        pc.addTransceiver(PcmTrack(np.zeros(SAMPLE_RATE, np.float32)), direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel(CONTROL_CHANNEL_LABEL)
        frames: list[int] = []
        tasks: list[asyncio.Task[None]] = []

        async def drain(track: MediaStreamTrack) -> None:
            while True:
                frames.append((await track.recv()).pts or 0)

        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                tasks.append(asyncio.create_task(drain(track)))

        pc.on("track", on_track)
        await pc.setLocalDescription(await pc.createOffer())
        offer = re.sub(r"a=max-message-size:\d+", "a=max-message-size:1", pc.localDescription.sdp)
        async with http.post(f"{server.url}/v1/sessions", data=offer, headers=SDP) as response:
            assert response.status == 201, await response.text()
            answer = await response.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        try:
            for _ in range(100):  # up to 10 s on a busy machine; a stalled video never gets there
                if len(frames) >= 25:
                    break
                await asyncio.sleep(0.1)
            assert len(frames) >= 25, f"{len(frames)} video frames"
        finally:
            for task in tasks:
                task.cancel()
            await pc.close()


def test_a_skipped_render_says_its_picture_does_not_show_its_controls(avatar: Avatar) -> None:
    """A render skipped to keep time repeats the last picture but carries the frame's own controls:
    the message says so (`shown: false`), so a client lining messages up with pictures can tell."""
    from lipstream.engine.engine import Engine, EngineConfig
    from lipstream.streaming.clock import ManualClock, MediaClock
    from lipstream.streaming.inbox import AudioInbox
    from lipstream.streaming.metrics import ServerMetrics
    from lipstream.streaming.worker import FrameProducer, FrameRing, RenderPool

    engine = Engine(avatar, EngineConfig())
    media = MediaClock(ManualClock())
    pool = RenderPool(1)
    producer = FrameProducer(engine, AudioInbox(), media, pool, FrameRing(media), ServerMetrics())
    vowel = 0.5 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    made = [producer._step(engine, chunk, render=i < 10) for i, chunk in enumerate(vowel.reshape(25, -1))]
    pool.shutdown()
    drawn, skipped = [f for f in made if f is not None and f.shown], [f for f in made if f and not f.shown]
    assert drawn and skipped
    assert skipped[0].yuv is drawn[-1].yuv  # the picture repeats...
    assert json.loads(control_message(skipped[0].index, skipped[0].controls, skipped[0].visemes,
                                      skipped[0].shown))["shown"] is False  # ...and says so
    assert json.loads(control_message(0, drawn[0].controls, drawn[0].visemes))["shown"] is True
