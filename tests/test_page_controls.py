"""The page as a product, in headless Chromium against a real `lipstream serve` on loopback: the
face before Start, the live status line, mute, Stop, the OBS link, narrow screens and the keyboard.
"""

import asyncio
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from lipstream.engine.constants import VIDEO_FPS
from lipstream.streaming.server import ServeConfig
from tests.browser import drop_file, inbound_stats, switch_microphone
from tests.pages import (
    CONNECTED,
    PREVIEW_SHOWN,
    TOKEN,
    server_seams,
    start_session,
    video_area_spread,
)
from tests.serving import MachineLoad, running_server

pytestmark = pytest.mark.usefixtures("loopback")


FPS_TOLERANCE = 0.10  # the status line's frame rate must read within 10% of VIDEO_FPS
STATUS_WINDOW_S = 3.0  # live.js: FPS_WINDOW_SAMPLES once a second
VOICE_WINDOW_S = 3.0
BUSY_CORES = 1.0  # other programs took this much of the 2 cores: frame rates say little


async def preview_png(page: Any) -> bytes:
    png: bytes = await page.locator("#preview").screenshot()
    return png


async def test_the_face_is_shown_before_start(browser: Any, tmp_path: Path) -> None:
    """The default face at once; a chosen photo as the server cropped it; a dropped photo without a
    face refused with the server's reason, all before Start and with no session made."""
    from skimage.data import astronaut

    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        await page.goto(server.url + "/")
        await page.wait_for_function(PREVIEW_SHOWN, timeout=20_000)
        default = await preview_png(page)
        assert video_area_spread(default) > 10, "the default face's preview is blank"

        photo = tmp_path / "mirrored.png"
        Image.fromarray(np.ascontiguousarray(astronaut()[:, ::-1])).save(photo)
        await page.set_input_files("#photo", str(photo))
        await page.wait_for_function("window.lipstream.avatarId !== null", timeout=20_000)
        await page.wait_for_function(PREVIEW_SHOWN)
        uploaded = np.asarray(Image.open(io.BytesIO(await preview_png(page))).convert("L"), np.float32)
        mirror = np.asarray(Image.open(io.BytesIO(default)).convert("L"), np.float32)[:, ::-1]
        assert np.abs(uploaded - mirror).mean() < 20, "the preview is not the uploaded (mirrored) face"
        assert await page.locator("#start").is_enabled()

        wall = tmp_path / "wall.png"
        Image.new("RGB", (640, 480), (200, 190, 170)).save(wall)
        await drop_file(page, "#stage", wall, "image/png")
        await page.wait_for_selector("#photo-note.problem", timeout=20_000)
        said = await page.locator("#photo-note").inner_text()
        assert "no face found" in said and "wall.png" in said, said
        assert await page.locator("#preview").is_hidden() and await page.locator("#start").is_disabled()

        notes = tmp_path / "notes.txt"
        notes.write_text("a shopping list")
        await drop_file(page, "#stage", notes, "text/plain")
        await page.wait_for_function("document.querySelector('#photo-note').textContent.includes('notes')")
        assert "not an image" in await page.locator("#photo-note").inner_text()

        await page.click("#use-default")
        await page.wait_for_function(PREVIEW_SHOWN)
        assert await page.locator("#start").is_enabled()
        assert not server.state.sessions, "choosing a face must not start a session"


async def test_preview_route_answers_json_errors() -> None:
    config = ServeConfig(max_sessions=1, token=TOKEN, loopback_ice=False)
    async with running_server(config, **server_seams()) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/v1/avatars/default/preview") as response:
            assert response.status == 401 and "token" in (await response.json())["error"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{server.url}/v1/avatars/default/preview", headers=auth) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            assert Image.open(io.BytesIO(await response.read())).size[0] > 0
        async with http.get(f"{server.url}/v1/avatars/nope/preview", headers=auth) as response:
            assert response.status == 404 and "upload the photo again" in (await response.json())["error"]


@dataclass(frozen=True)
class FpsReading:
    shown: float  # the status line's figure
    measured: float  # the browser's frames decoded per second over the same STATUS_WINDOW_S

    def near(self, fps: float) -> bool:
        return all(abs(x - fps) <= FPS_TOLERANCE * fps for x in (self.shown, self.measured))


async def status_line_fps(page: Any, readings: int = 4) -> list[FpsReading]:
    """Readings of the status line's frame rate beside the browser's own count, until one shows
    VIDEO_FPS (like steady_window: one good reading shows the page keeps up on a shared box)."""
    seen: list[FpsReading] = []
    for _ in range(readings):
        before = await inbound_stats(page, "window.lipstream.pc")
        await asyncio.sleep(STATUS_WINDOW_S)
        after = await inbound_stats(page, "window.lipstream.pc")
        seconds = (after["video"]["timestamp"] - before["video"]["timestamp"]) / 1000
        measured = (after["video"]["framesDecoded"] - before["video"]["framesDecoded"]) / seconds
        seen.append(FpsReading(await page.evaluate("window.lipstream.live.fps"), measured))
        if seen[-1].near(VIDEO_FPS):
            break
    return seen


def check_status_line_fps(readings: list[FpsReading], load: MachineLoad) -> None:
    """Within 10% of VIDEO_FPS on a machine where the test had at least one core; on a busier one
    the browser itself decodes fewer frames, and the figure is not judged (a warning says so)."""
    said = f"{readings}; other programs used {load.others_cores:.1f} cores"
    if readings[-1].near(VIDEO_FPS):
        return
    if load.others_cores < BUSY_CORES:
        raise AssertionError(f"no reading within {FPS_TOLERANCE:.0%} of {VIDEO_FPS} fps: {said}")
    warnings.warn(f"status line frame rate not judged: {said}", stacklevel=1)


@dataclass(frozen=True)
class Returned:
    frames: float  # video frames decoded in VOICE_WINDOW_S
    energy: float  # audio energy received in VOICE_WINDOW_S (the avatar's voice: the mic, delayed)


async def returned_voice(page: Any) -> Returned:
    """What came back over VOICE_WINDOW_S; the fake mic loops ~3 s of speech in ~4 s, so a
    talking window always holds speech."""
    before = await inbound_stats(page, "window.lipstream.pc")
    await asyncio.sleep(VOICE_WINDOW_S)
    after = await inbound_stats(page, "window.lipstream.pc")
    return Returned(after["video"]["framesDecoded"] - before["video"]["framesDecoded"],
                    after["audio"]["totalAudioEnergy"] - before["audio"]["totalAudioEnergy"])


async def test_live_status_line_mute_obs_link_and_stop(browser: Any) -> None:
    async with running_server(ServeConfig(max_sessions=2, loopback_ice=False), **server_seams()) as server, \
            aiohttp.ClientSession() as http:
        page = await browser.new_page()
        session_id = await start_session(page, server)
        await asyncio.sleep(STATUS_WINDOW_S)  # the status line's window fills
        with MachineLoad() as load:
            readings = await status_line_fps(page)
        check_status_line_fps(readings, load)
        live = await page.evaluate("window.lipstream.live")
        assert live["rttMs"] is not None and live["sessions"] == 1 and live["maxSessions"] == 2, live
        line = await page.locator("#stats").inner_text()
        assert "fps" in line and "round trip" in line and "1 of 2 sessions" in line, line
        await page.wait_for_function("window.lipstream.live.micLevel > 0.01", timeout=10_000)  # speech

        link = await page.locator("#viewer-link").get_attribute("href")
        assert link == f"{server.url}/view/{session_id}"
        await browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        await page.click("#copy")
        assert await page.evaluate("navigator.clipboard.readText()") == link
        viewer = await browser.new_page()
        await viewer.goto(link)
        await viewer.wait_for_function("document.getElementById('video').currentTime > 1.0", timeout=20_000)
        assert (await inbound_stats(viewer, "window.lipstreamViewer.pc"))["video"]["framesDecoded"] > 0
        width = await page.evaluate("document.getElementById('avatar').videoWidth")
        assert width > 0 and await page.locator("#obs-width").inner_text() == str(width)

        await switch_microphone(page)
        talking = await returned_voice(page)
        await page.click("#mute")
        assert await page.locator("#mute").get_attribute("aria-pressed") == "true"
        await asyncio.sleep(1.0)  # what was said before muting has come back by now
        muted = await returned_voice(page)
        assert muted.frames >= VIDEO_FPS, "frames stopped while muted"
        assert muted.energy < 0.01 * talking.energy, f"muted, yet the voice came back: {muted}, {talking}"
        async with http.get(f"{server.url}/v1/sessions/{session_id}") as response:
            assert response.status == 200 and (await response.json())["state"] == "live"

        await page.click("#stop")
        await page.wait_for_function("document.getElementById('status').textContent.includes('ended on')")
        async with http.get(f"{server.url}/v1/sessions/{session_id}") as response:
            assert response.status == 404
        await viewer.wait_for_function("window.lipstreamViewer.ended !== null", timeout=5_000)
        assert await page.locator("#obs").is_hidden() and await page.locator("#live").is_hidden()


# 1280x900 at 200% zoom lays out like 640x450; a phone is ~390 px wide
NARROW_VIEWPORTS = ({"width": 640, "height": 450}, {"width": 390, "height": 844})
OVERFLOWS_X = "document.documentElement.scrollWidth > document.documentElement.clientWidth"


async def test_page_fits_narrow_screens_and_works_from_the_keyboard(browser: Any) -> None:
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        for viewport in NARROW_VIEWPORTS:
            await page.set_viewport_size(viewport)
            await page.goto(server.url + "/")
            await page.wait_for_function(PREVIEW_SHOWN, timeout=20_000)
            assert not await page.evaluate(OVERFLOWS_X), f"sideways scrolling at {viewport}"
        reached = []
        for _ in range(8):
            await page.keyboard.press("Tab")
            reached.append(await page.evaluate("document.activeElement.id"))
        assert {"photo", "mic", "sound", "start"} <= set(reached), reached
        await page.focus("#start")
        await page.keyboard.press("Enter")
        await page.wait_for_function(CONNECTED, timeout=20_000)
        await page.focus("#stop")
        await page.keyboard.press("Enter")
        await page.wait_for_function("window.lipstream.pc === null")
        assert await page.locator("#start").is_enabled()
