"""Headless Chromium plays the server's Opus as it is sent, one 40 ms packet per video frame:
25 packets a second, the voice decoded with next to nothing concealed."""

import asyncio
from pathlib import Path
from typing import Any

from lipstream.streaming.server import ServeConfig
from tests.serving import loopback_only, running_server
from tests.test_page import browser, fake_mic, server_seams, start_session, stop_session  # noqa: F401

SETTLE_S = 3.0  # the jitter buffer finds its level
WINDOW_S = 4.0
PACKETS_PER_S = 25  # one per video frame
CHROMIUM_PLAYOUT_RATE = 48_000  # samples a second in its statistics
MAX_CONCEALED = 0.05  # of the samples played: a loaded machine delays a few packets

# The page's audio receive statistics (Chromium's inbound-rtp for audio).
AUDIO_JS = """async (pcExpression) => {
  let out = null;
  (await eval(pcExpression).getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") out = {
      t_ms: s.timestamp, packets: s.packetsReceived, samples: s.totalSamplesReceived,
      concealed: s.concealedSamples, energy: s.totalAudioEnergy,
      delay_s: s.jitterBufferDelay, emitted: s.jitterBufferEmittedCount,
    };
  });
  return out;
}"""


async def audio_window(page: Any) -> dict[str, float]:
    """Changes of the audio statistics over WINDOW_S, after SETTLE_S."""
    await asyncio.sleep(SETTLE_S)
    before = await page.evaluate(AUDIO_JS, "window.lipstream.pc")
    await asyncio.sleep(WINDOW_S)
    after = await page.evaluate(AUDIO_JS, "window.lipstream.pc")
    return {key: after[key] - before[key] for key in after}


async def test_chromium_plays_one_40_ms_packet_per_frame(browser: Any, monkeypatch: Any,  # noqa: F811
                                                         tmp_path: Path) -> None:
    loopback_only(monkeypatch)
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        await start_session(page, server)
        got = await audio_window(page)
        await stop_session(page, server)
    seconds = got["t_ms"] / 1000
    said = (f"{got['packets'] / seconds:.1f} packets/s, {got['concealed'] / max(got['samples'], 1):.1%} "
            f"concealed, jitter buffer {1000 * got['delay_s'] / max(got['emitted'], 1):.0f} ms; {got}")
    print(said)  # the figures, with pytest -s
    assert abs(got["packets"] / seconds - PACKETS_PER_S) <= 2, said
    assert got["samples"] > 0.9 * seconds * CHROMIUM_PLAYOUT_RATE, said  # played all along
    assert got["concealed"] <= MAX_CONCEALED * got["samples"], said
    assert got["energy"] > 1e-4, said  # the voice, not silence
