"""The pages when there is nothing left to wait for: Stop pressed while the offer is still on its way
to the server, a viewer link whose token is refused. Headless Chromium against a real
`lipstream serve` on loopback."""

import asyncio
from typing import Any

import aiohttp
import pytest

from lipstream.streaming.client import Publisher
from lipstream.streaming.server import ServeConfig
from tests.pages import CONNECTED, TOKEN, server_seams
from tests.serving import SILENCE, running_server

pytestmark = pytest.mark.usefixtures("loopback")

CONNECTING = "document.getElementById('status').textContent.startsWith('Connecting')"


async def test_stop_while_connecting_ends_the_session_quietly_and_start_works_again(browser: Any) -> None:
    """The POST is held in the browser (playwright's route) until Stop was pressed, as a slow
    server or network holds it. The session it creates is ended on the server, the page shows no
    error (not a JavaScript message about a null), and Start opens a new session."""
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False), **server_seams()) as server:
        page = await browser.new_page()
        held: asyncio.Queue[Any] = asyncio.Queue()
        await page.route("**/v1/sessions", held.put)
        await page.goto(server.url)
        await page.click("#start")
        await page.wait_for_function(CONNECTING)
        route = await asyncio.wait_for(held.get(), 10)
        await page.click("#stop")
        await route.continue_()
        await page.unroute("**/v1/sessions")
        await page.wait_for_function("!window.lipstream.pc", timeout=10_000)
        await asyncio.sleep(1.0)  # the held answer has arrived and been handled by now
        assert await page.locator("#error").is_hidden(), await page.locator("#error").inner_text()
        for _ in range(50):
            if not server.state.sessions:
                break
            await asyncio.sleep(0.1)
        assert not server.state.sessions, "the abandoned session still holds the server's only slot"
        assert await page.locator("#start").is_enabled()
        await page.click("#start")
        await page.wait_for_function(CONNECTED, timeout=20_000)
        await page.click("#stop")


async def test_a_viewer_link_with_a_refused_token_says_so_and_stops_retrying(browser: Any) -> None:
    """A wrong token (or one from before the server restarted) never becomes valid: the viewer
    says the link is not accepted, instead of "Retrying…" with a new connection every few seconds."""
    async with running_server(ServeConfig(max_sessions=1, token=TOKEN, loopback_ice=False),
                              **server_seams()) as server, aiohttp.ClientSession() as http:
        publisher = Publisher(server.url, SILENCE, token=TOKEN)
        await publisher.start(http)
        session_id = publisher.location.split("/")[-1] if publisher.location else ""
        viewer = await browser.new_page()
        await viewer.goto(f"{server.url}/view/{session_id}?token=not-{TOKEN}")
        await viewer.wait_for_function("window.lipstreamViewer.refused", timeout=10_000)
        said = await viewer.locator("#message").inner_text()
        assert "not accepted" in said and "token" in said and "Retrying" not in said, said
        await asyncio.sleep(4.0)  # longer than the viewer's retry period
        assert await viewer.evaluate("window.lipstreamViewer.pc === null")
        assert not server.state.sessions[session_id].viewers
        await publisher.stop(http)
