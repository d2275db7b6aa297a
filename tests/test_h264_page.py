"""The H.264 session in headless Chromium: the page receives H.264 from an `--video-codec h264`
server, decodes it at 25 fps, and plays the audio with it."""

import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipstream.streaming.encoders import H264
from lipstream.streaming.server import ServeConfig
from tests.pages import Window, start_session, steady_window
from tests.serving import MachineLoad, running_server

PC = "window.lipstream.pc"

# Per kind: the negotiated codec and the playout figures (see picture_minus_sound_ms).
PLAYOUT_JS = """async (pcExpression) => {
  const stats = await eval(pcExpression).getStats();
  const out = {};
  stats.forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = {
      mimeType: stats.get(s.codecId).mimeType, framesPerSecond: s.framesPerSecond,
      estimatedPlayoutTimestamp: s.estimatedPlayoutTimestamp, timestamp: s.timestamp,
      jitterBufferDelay: s.jitterBufferDelay, jitterBufferEmittedCount: s.jitterBufferEmittedCount,
    };
  });
  return out;
}"""


SAMPLES = 12  # playout readings, a third of a second apart
# ITU-R BT.1359: sound ahead of the picture is noticed from 45 ms, behind it from 125 ms. Chromium
# updates the video's playout time once a frame (40 ms), so single readings scatter by that much.
SOUND_AHEAD_MS, SOUND_BEHIND_MS = 45.0, 125.0
BUSY_CORES = 1.0  # as tests/test_webrtc.py: less than one core left says nothing about the stream


pytestmark = pytest.mark.usefixtures("loopback")


async def playout(page: Any, pc: str = PC) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = await page.evaluate(PLAYOUT_JS, pc)
    return stats


async def picture_minus_sound_ms(page: Any) -> float:
    """Median over SAMPLES readings of what the picture shows minus what the speaker plays, both
    as the sender's clock time (`estimatedPlayoutTimestamp`: Chromium maps each stream's RTP
    timestamps to the sender's NTP clock through its RTCP sender reports). Positive: the picture
    shows media later than the sound being heard."""
    offsets = []
    for _ in range(SAMPLES):
        stats = await playout(page)
        video, audio = stats["video"], stats["audio"]
        offsets.append(video["estimatedPlayoutTimestamp"] - audio["estimatedPlayoutTimestamp"])
        await asyncio.sleep(0.33)
    return float(np.median(offsets))


def check_frame_rate(window: Window, taken: list[Window], load: MachineLoad) -> None:
    """25 fps with nothing dropped in one window; not judged when other programs kept a whole core
    of this shared 2-core box busy meanwhile (Chromium itself counts as another program)."""
    said = ", ".join(f"{w.fps:.1f} fps / {w.dropped} dropped" for w in taken)
    said += f"; other programs used {load.others_cores:.1f} cores"
    if window.fps >= 24.0 and window.dropped == 0:
        return
    assert load.others_cores >= BUSY_CORES, said
    warnings.warn(f"frame rate not judged: {said}", stacklevel=1)


def check_sync(offset_ms: float, load: MachineLoad) -> None:
    """Within what a viewer notices; judged, as the frame rate, only on a machine not kept busy
    (under a load of 12 on these 2 cores VP8 and H.264 alike have shown 50-150 ms)."""
    said = f"picture {offset_ms:+.0f} ms from its sound; other programs used {load.others_cores:.1f} cores"
    if -SOUND_AHEAD_MS <= offset_ms <= SOUND_BEHIND_MS:
        return
    assert load.others_cores >= BUSY_CORES, said
    warnings.warn(f"sync not judged: {said}", stacklevel=1)


async def test_chromium_receives_h264_at_25_fps_with_its_sound_in_sync(browser: Any,
                                                                       tmp_path: Path) -> None:
    config = ServeConfig(max_sessions=1, loopback_ice=False, video_codec=H264)
    async with running_server(config) as server:
        page = await browser.new_page()
        session_id = await start_session(page, server)
        await asyncio.sleep(3.0)  # settle: jitter buffer and frame rate estimate
        stats = await playout(page)
        assert stats["video"]["mimeType"] == "video/H264", stats
        with MachineLoad() as load:
            window, taken = await steady_window(page, PC)
            offset_ms = await picture_minus_sound_ms(page)
        assert window.stats["video"]["frameWidth"] == 512 and window.stats["audio"]["totalAudioEnergy"] > 1e-4
        check_frame_rate(window, taken, load)
        check_sync(offset_ms, load)

        viewer = await browser.new_page()  # a viewer's sender prefers H.264 too
        await viewer.goto(f"{server.url}/view/{session_id}")
        await viewer.wait_for_function("document.getElementById('video').currentTime > 2.0", timeout=20_000)
        watched = await playout(viewer, "window.lipstreamViewer.pc")
        assert watched["video"]["mimeType"] == "video/H264", watched
        await page.screenshot(path=str(tmp_path / "page.png"))  # for a person reading a failure
