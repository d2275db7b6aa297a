"""The page and the viewer page in headless Chromium against a real `lipstream serve` on loopback.

Chromium's fake microphone plays espeak-ng speech; the page sends it, and the test reads the
browser's own WebRTC statistics, a screenshot of the video, and the viewer page of the session.
"""

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from lipstream.engine.constants import VIDEO_FPS
from lipstream.streaming.server import ServeConfig
from tests.browser import inbound_stats
from tests.pages import (
    CONNECTED,
    MEASURE_S,
    PREVIEW_SHOWN,
    TOKEN,
    open_viewer,
    server_seams,
    start_session,
    steady_window,
    stop_session,
    video_area_spread,
)
from tests.serving import running_server

pytestmark = pytest.mark.usefixtures("loopback")


async def test_page_streams_the_talking_face(browser: Any, tmp_path: Path) -> None:
    async with running_server(ServeConfig(max_sessions=2, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        session_id = await start_session(page, server)
        assert session_id in server.state.sessions
        await asyncio.sleep(3.0)  # settle: jitter buffer and frame rate estimate
        window, taken = await steady_window(page, "window.lipstream.pc")
        stats = window.stats

        summary = ", ".join(f"{w.fps:.1f} fps / {w.dropped} dropped" for w in taken)
        assert window.fps >= 24.0 and window.dropped == 0, f"no steady {MEASURE_S} s window: {summary}"
        assert stats["video"]["frameWidth"] > 0, stats["video"]
        # the returned audio is the microphone's speech, delayed: it must not be silence
        assert stats["audio"]["totalAudioEnergy"] > 1e-4, stats["audio"]

        await page.screenshot(path=str(tmp_path / "page.png"))  # for a person reading a failure
        png = await page.locator("#avatar").screenshot(path=str(tmp_path / "video.png"))
        assert video_area_spread(png) > 10, "the video area is blank"
        assert await page.locator("#session-id").inner_text() == session_id
        assert await page.locator("#error").is_hidden()

        viewer = await browser.new_page()
        await viewer.goto(f"{server.url}/view/{session_id}")
        await viewer.wait_for_function(
            "window.lipstreamViewer.pc && window.lipstreamViewer.pc.connectionState === 'connected'",
            timeout=20_000)
        await viewer.wait_for_function("document.getElementById('video').currentTime > 2.0", timeout=10_000)
        watched = await inbound_stats(viewer, "window.lipstreamViewer.pc")
        assert watched["video"]["framesDecoded"] >= VIDEO_FPS, watched
        assert watched["audio"]["totalAudioEnergy"] > 1e-4, "the viewer gets no voice"
        await viewer.screenshot(path=str(tmp_path / "viewer.png"))
        if await viewer.locator("#overlay").is_visible():  # autoplay with sound refused: one click
            await viewer.click("#overlay")
        assert await viewer.evaluate("document.getElementById('video').muted") is False

        await stop_session(page, server)


async def test_page_token_photo_upload_and_errors(browser: Any, tmp_path: Path) -> None:
    from skimage.data import astronaut

    config = ServeConfig(max_sessions=1, token=TOKEN, loopback_ice=False)
    async with running_server(config, **server_seams()) as server:
        page = await browser.new_page()
        answers = iter(["wrong-token", TOKEN])
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(next(answers))))
        offers: list[str] = []
        page.on("request", lambda r: offers.append(r.url) if r.url.startswith(f"{server.url}/v1/sessions")
                and r.method == "POST" else None)
        await page.goto(server.url + "/")
        await page.wait_for_function("document.getElementById('stage-note').textContent.includes('token')")
        await page.click("#start")
        await page.wait_for_selector("#error:not([hidden])")
        assert "token" in await page.locator("#error").inner_text()

        session_id = await start_session(page, server)  # asked again: the right token this time
        assert session_id in server.state.sessions
        await page.wait_for_function(PREVIEW_SHOWN)  # the face, once the token is known
        link = await page.locator("#viewer-link").inner_text()
        assert "token=" in link and TOKEN not in link, "the viewer link must not carry the server token"
        viewer = await open_viewer(browser, server, link, session_id)  # its viewer token is enough
        await viewer.close()
        await stop_session(page, server)

        photo = tmp_path / "mirrored.png"
        Image.fromarray(astronaut()[:, ::-1]).save(photo)
        await page.set_input_files("#photo", str(photo))
        await page.click("#start")
        await page.wait_for_function(CONNECTED, timeout=20_000)
        assert "?avatar=" in offers[-1], "the session was not asked for the uploaded photo"
        await stop_session(page, server)

        not_a_photo = tmp_path / "photo.jpg"
        not_a_photo.write_text("not an image")
        await page.set_input_files("#photo", str(not_a_photo))
        await page.wait_for_selector("#photo-note.problem")  # said on choice, before Start
        assert "not an image" in await page.locator("#photo-note").inner_text()
        assert await page.locator("#start").is_disabled()


# A browser that, like most desktop browsers on a first visit, refuses sound without a click
STRICT_AUTOPLAY = ("--autoplay-policy=document-user-activation-required",)


@pytest.mark.parametrize("browser", [STRICT_AUTOPLAY], ids=["strict-autoplay"], indirect=True)
async def test_viewer_plays_muted_and_asks_for_a_click_when_sound_is_refused(browser: Any) -> None:
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        session_id = await start_session(page, server)
        # no evaluate() on the viewer until it has tried to play: playwright evaluates with a
        # user gesture, which would grant the very permission under test
        viewer = await open_viewer(browser, server, f"{server.url}/view/{session_id}", session_id)
        await asyncio.sleep(1.0)
        assert await viewer.locator("#overlay").is_visible()
        assert await viewer.locator("#message").inner_text() == "Click for sound"
        await viewer.wait_for_function("document.getElementById('video').currentTime > 0.5", timeout=10_000)
        assert await viewer.evaluate("document.getElementById('video').muted") is True

        await viewer.click("#overlay")
        assert await viewer.evaluate("document.getElementById('video').muted") is False
        assert await viewer.locator("#overlay").is_hidden()
        played = await viewer.evaluate("document.getElementById('video').currentTime")
        await viewer.wait_for_function(f"document.getElementById('video').currentTime > {played + 0.5}",
                                       timeout=5_000)  # still playing, now with sound
        await stop_session(page, server)


async def test_pages_say_the_server_ended_the_session_and_why(browser: Any) -> None:
    """Ended from the server side while live: the page and the viewer page say so, with the reason,
    within a few seconds (not a frozen "Live" and then a wrong "network or firewall")."""
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        session_id = await start_session(page, server)
        viewer = await open_viewer(browser, server, f"{server.url}/view/{session_id}", session_id)
        targets = await page.evaluate("window.lipstream.pc.getReceivers().map(r => r.jitterBufferTarget)")
        assert targets and all(t == 0 for t in targets), targets  # lowest playout delay asked for

        async with aiohttp.ClientSession() as http, \
                http.delete(f"{server.url}/v1/sessions/{session_id}") as response:  # an operator's client
            assert response.status == 204
        await page.wait_for_selector("#error:not([hidden])", timeout=5_000)
        said = await page.locator("#error").inner_text()
        assert "server ended the session" in said and "stopped" in said, said
        assert "firewall" not in said
        assert await page.locator("#stop").is_disabled() and await page.locator("#start").is_enabled()
        await viewer.wait_for_function("window.lipstreamViewer.ended !== null", timeout=5_000)
        assert "has ended" in await viewer.locator("#message").inner_text()
