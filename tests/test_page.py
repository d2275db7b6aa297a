"""The page and the viewer page in headless Chromium against a real `lipstream serve` on loopback.

Chromium's fake microphone plays espeak-ng speech; the page sends it, and the test reads the
browser's own WebRTC statistics, a screenshot of the video, and the viewer page of the session.
"""

import asyncio
import io
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE, VIDEO_FPS
from lipstream.streaming.server import ServeConfig
from tests.browser import (
    chromium_executable,
    drop_file,
    inbound_stats,
    launch,
    switch_microphone,
    write_fake_mic_wav,
)
from tests.conftest import espeak_wav
from tests.serving import MachineLoad, RunningServer, running_server

TOKEN = "page-test-token"
MEASURE_S = 4.0  # the frame-rate window, after the stream has settled
MAX_WINDOWS = 3


pytestmark = pytest.mark.usefixtures("loopback")


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech with silence around it: Chromium loops the file."""
    folder = tmp_path_factory.mktemp("mic")
    speech = load_audio(espeak_wav(folder / "speech.wav", "Papa bought a big map. Mama, look at the moon!"))
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * 0.7
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    return write_fake_mic_wav(folder / "mic48k.wav", np.concatenate([pad, speech, pad]))


def server_seams() -> dict[str, Callable[..., object]]:
    """The real engine and default avatar (a seam kept so a test can swap them)."""
    return {}


@pytest.fixture(params=[()], ids=["default-autoplay"])
async def browser(request: pytest.FixtureRequest, fake_mic: Path, tmp_path: Path) -> AsyncIterator[Any]:
    chromium_executable()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await launch(playwright, tmp_path / "profile", fake_mic, *request.param)
        try:
            yield context
        finally:
            await context.close()


CONNECTED = "window.lipstream.pc && window.lipstream.pc.connectionState === 'connected'"


async def start_session(page: Any, server: RunningServer, query: str = "") -> str:
    await page.goto(f"{server.url}/{query}")
    await page.click("#start")
    await page.wait_for_function(CONNECTED, timeout=20_000)
    session_id: str = await page.evaluate("window.lipstream.sessionId")
    return session_id


async def viewer_connected(server: RunningServer, session_id: str, timeout_s: float = 20.0) -> None:
    """Wait, from the server's side, until a viewer of the session is connected."""
    session = server.state.sessions[session_id]
    for _ in range(round(timeout_s * 10)):
        if any(pc.connectionState == "connected" for pc in session.viewers.values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no viewer connected within {timeout_s} s")


async def open_viewer(browser: Any, server: RunningServer, url: str, session_id: str) -> Any:
    """A viewer page at `url`, once the server has it connected to the session (asked of the
    server, not the page: evaluating on the page would count as a user gesture)."""
    viewer = await browser.new_page()
    await viewer.goto(url)
    await viewer_connected(server, session_id)
    return viewer


async def stop_session(page: Any, server: RunningServer) -> None:
    await page.click("#stop")
    for _ in range(50):
        if not server.state.sessions:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("Stop did not end the session on the server")


@dataclass(frozen=True)
class Window:
    fps: float  # frames decoded per second, by the browser's clock
    dropped: int  # frames the browser dropped in the window
    stats: dict[str, dict[str, float]]  # inbound-rtp stats at its end


async def measure_window(page: Any, pc: str) -> Window:
    before = await inbound_stats(page, pc)
    await asyncio.sleep(MEASURE_S)
    after = await inbound_stats(page, pc)
    video, video_before = after["video"], before["video"]
    seconds = (video["timestamp"] - video_before["timestamp"]) / 1000
    return Window(fps=(video["framesDecoded"] - video_before["framesDecoded"]) / seconds,
                  dropped=int(video["framesDropped"] - video_before["framesDropped"]), stats=after)


async def steady_window(page: Any, pc: str) -> tuple[Window, list[Window]]:
    """The first of up to MAX_WINDOWS windows at >= 24 fps with nothing dropped, and all taken.

    This box is shared: another program can take both cores for a second and make the browser
    drop a frame. One clean window shows the page keeps up; a page that cannot fails them all.
    """
    taken = []
    for _ in range(MAX_WINDOWS):
        taken.append(await measure_window(page, pc))
        if taken[-1].fps >= 24.0 and taken[-1].dropped == 0:
            break
    return taken[-1], taken


def video_area_spread(png: bytes) -> float:
    """Standard deviation of the grey levels in a screenshot: ~0 for a black or frozen-blank box."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    return float(grey.std())


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


# --- the page as a product: the face before Start, live figures, mute, Stop, OBS (issue 13) ---

PREVIEW_SHOWN = "window.lipstream.previewShown && !document.getElementById('preview').hidden"
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
