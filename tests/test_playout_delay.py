"""The page and the viewer page ask headless Chromium for its lowest playout delay
(`RTCRtpReceiver.jitterBufferTarget = 0`), and the browser's own statistics show it in effect.

Three runs of the page against a real `lipstream serve`: as shipped (the hint), with the hint
ignored (the setter does nothing: the browser's default), and with a large target forced in
its place (proof that the knob reaches the jitter buffer this test reads). Each reads the
targets back from the receivers and the video jitter buffer's mean delay from getStats()
(`jitterBufferDelay / jitterBufferEmittedCount` over a window)."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.server import ServeConfig
from tests.browser import chromium_executable, launch, write_fake_mic_wav
from tests.pages import start_session, stop_session, viewer_connected
from tests.serving import RunningServer, loopback_only, running_server

SETTLE_S = 3.0  # the jitter buffers find their level
WINDOW_S = 3.0  # mean delay over this window
FORCED_MS = 300  # a target no network here needs: the delay it brings cannot be missed
LOWEST_MS = 100  # the hint's mean video delay stays well under this (Chromium on loopback: ~10-40)

# Replaces the jitterBufferTarget setter before the page's scripts run: `null` ignores whatever
# the page asks for (the browser's default), a number forces that target instead.
OVERRIDE_JS = """(forced) => {
  const own = Object.getOwnPropertyDescriptor(RTCRtpReceiver.prototype, "jitterBufferTarget");
  Object.defineProperty(RTCRtpReceiver.prototype, "jitterBufferTarget", {
    configurable: true,
    get() { return own.get.call(this); },
    set(ms) { if (forced !== null) own.set.call(this, forced); },
  });
}"""

# Video and audio jitter-buffer totals, and each receiver's target as read back.
PLAYOUT_JS = """async (pcExpression) => {
  const pc = eval(pcExpression);
  const out = { targets: pc.getReceivers().map((r) => r.jitterBufferTarget) };
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") out[s.kind] = {
      delay_s: s.jitterBufferDelay, emitted: s.jitterBufferEmittedCount,
      target_s: s.jitterBufferTargetDelay,
    };
  });
  return out;
}"""


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback_only(monkeypatch)


@pytest.fixture(scope="module")
def tone_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A voiced tone with pauses: the microphone is not silent (the test does not judge the face)."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (t < 0.6)).astype(np.float32)
    return write_fake_mic_wav(tmp_path_factory.mktemp("mic") / "mic48k.wav", tone)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False)) as running:
        yield running


async def mean_delay_ms(page: Any, pc: str) -> dict[str, Any]:
    """Targets read back, and each kind's mean jitter-buffer delay (ms) over WINDOW_S."""
    await asyncio.sleep(SETTLE_S)
    before = await page.evaluate(PLAYOUT_JS, pc)
    await asyncio.sleep(WINDOW_S)
    after = await page.evaluate(PLAYOUT_JS, pc)
    out: dict[str, Any] = {"targets": after["targets"]}
    for kind in ("video", "audio"):
        emitted = after[kind]["emitted"] - before[kind]["emitted"]
        assert emitted > 0, f"no {kind} left the jitter buffer: {after}"
        out[kind] = 1000 * (after[kind]["delay_s"] - before[kind]["delay_s"]) / emitted
    return out


async def page_run(server: RunningServer, mic: Path, profile: Path,
                   forced: float | None | str) -> dict[str, Any]:
    """One session from the page; `forced` "shipped" leaves the page as it is."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await launch(playwright, profile, mic)
        try:
            if forced != "shipped":
                await context.add_init_script(f"({OVERRIDE_JS})({'null' if forced is None else forced})")
            page = await context.new_page()
            session_id = await start_session(page, server)
            figures = await mean_delay_ms(page, "window.lipstream.pc")
            if forced == "shipped":
                viewer = await context.new_page()
                await viewer.goto(f"{server.url}/view/{session_id}")
                await viewer_connected(server, session_id)
                await viewer.wait_for_function("window.lipstreamViewer.pc.getReceivers().length >= 2")
                figures["viewer"] = await mean_delay_ms(viewer, "window.lipstreamViewer.pc")
            await stop_session(page, server)
            return figures
        finally:
            await context.close()


async def test_the_pages_ask_for_the_lowest_playout_delay_and_get_it(
        server: RunningServer, tone_mic: Path, tmp_path: Path) -> None:
    chromium_executable()
    shipped = await page_run(server, tone_mic, tmp_path / "shipped", "shipped")
    default = await page_run(server, tone_mic, tmp_path / "default", None)
    forced = await page_run(server, tone_mic, tmp_path / "forced", FORCED_MS)
    said = f"hint {shipped}; browser default {default}; forced {FORCED_MS} ms {forced}"
    print(f"Chromium playout delay (mean ms over {WINDOW_S:g} s): {said}")  # figures, with pytest -s
    assert shipped["targets"] and all(t == 0 for t in shipped["targets"]), said
    assert shipped["viewer"]["targets"] and all(t == 0 for t in shipped["viewer"]["targets"]), said
    assert all(t is None for t in default["targets"]), said  # the default run really had no hint
    # the knob reaches the jitter buffer whose delay is read here...
    assert forced["video"] >= 0.6 * FORCED_MS, said
    # ...and the hint leaves it at its lowest: no more than the browser's default, far below forced
    for figures in (shipped, shipped["viewer"]):
        assert figures["video"] <= max(default["video"] + 20, LOWEST_MS), said
