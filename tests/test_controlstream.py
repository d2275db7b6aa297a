"""The control stream: a message per video frame on the `lipstream.controls` data channel, in
order, on the video's own frame indices (checked by content: the mouth opens on the same index in
the picture and in the controls)."""

import asyncio
import json

import aiohttp
import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import VIDEO_PTS_PER_FRAME
from lipstream.engine.controls import CONTROL_NAMES, VISEMES
from lipstream.engine.engine import Engine
from lipstream.measure.mouth import MouthOpenDetector
from lipstream.streaming.client import Publisher
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.controlstream import control_message
from tests.conftest import espeak_wav
from tests.serving import loopback_only, running_server

SIZE = 256
KEEP = 128  # received frames are kept at this side (cheaper to score)
MAX_LAG = 3  # frames either side searched for the best alignment


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_only(monkeypatch)


def test_a_message_names_the_frame_its_controls_and_top_visemes() -> None:
    visemes = np.zeros(len(VISEMES), np.float32)
    visemes[VISEMES.index("aa")], visemes[VISEMES.index("E")], visemes[0] = 0.6, 0.3, 0.1
    message = json.loads(control_message(7, np.array([0.5, 0.1, 0, 0, 0.25], np.float32), visemes))
    assert message["frame"] == 7 and message["pts"] == 7 * VIDEO_PTS_PER_FRAME
    assert list(message["controls"]) == list(CONTROL_NAMES) and message["controls"]["jaw_open"] == 0.5
    assert [name for name, _ in message["visemes"]] == ["aa", "E", "sil"]


async def test_control_messages_line_up_with_the_video_frames(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    avatar = Avatar.default(AvatarConfig(size=SIZE))
    speech = load_audio(espeak_wav(tmp_path_factory.mktemp("controls") / "ah.wav",
                                   "Ah! ... Mama. ... Ah! ... Papa. ... Ah!", "-g", "20"))
    pcm = np.concatenate([np.zeros(8_000, np.float32), speech])
    seams = {"load_avatar": lambda: avatar, "engine_factory": Engine}
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **seams) as server, \
            aiohttp.ClientSession() as http:
        publisher = Publisher(server.url, pcm, keep_size=KEEP, controls=True)
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        await asyncio.sleep(pcm.size / 16_000 + 1.0)
        await publisher.stop(http)
    messages = publisher.control_messages
    indices = [m["frame"] for m in messages]
    # In order, one per frame sent (a video track that fell 200 ms behind skips ahead, and so do
    # its messages: a busy machine may leave a gap, but no repeats and no disorder).
    assert len(indices) > 50 and all(b > a for a, b in zip(indices, indices[1:], strict=False))
    assert len(indices) >= 0.5 * (indices[-1] - indices[0] + 1)
    jaw = {m["frame"]: m["controls"]["jaw_open"] for m in messages}
    assert max(jaw.values()) > 0.3  # it spoke
    # A video frame's index from its timestamp: frame 0 (a keyframe) is the first the server sends.
    first_pts = publisher.received.video_pts[0]
    frames = {(pts - first_pts) // VIDEO_PTS_PER_FRAME: image
              for pts, image in zip(publisher.received.video_pts, publisher.received.images, strict=True)}
    detector = MouthOpenDetector(avatar, KEEP)
    common = sorted(set(frames) & set(jaw))
    assert len(common) > 50, (len(frames), len(jaw), sorted(frames)[:3], sorted(jaw)[:3])
    opened = np.array([detector.score(frames[i]) for i in common])
    controls = np.array([jaw[i] for i in common])

    def agreement(lag: int) -> float:
        if lag < 0:
            return agreement_of(opened[:lag], controls[-lag:])
        return agreement_of(opened[lag:], controls[: controls.size - lag])

    def agreement_of(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1])

    by_lag = {lag: agreement(lag) for lag in range(-MAX_LAG, MAX_LAG + 1)}
    assert max(by_lag, key=by_lag.__getitem__) == 0, by_lag  # the mouth opens on the same index
    assert by_lag[0] > 0.7, by_lag
