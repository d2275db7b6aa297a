"""The page when the server hangs mid-session (a stopped process, a frozen host): its HTTP
connections stay open and never answer. Headless Chromium against a real `lipstream serve`
subprocess, frozen with SIGSTOP."""

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from lipstream.measure.server import free_port, wait_healthy
from tests.pages import CONNECTED

VIEWER_CONNECTED = "window.lipstreamViewer.pc && window.lipstreamViewer.pc.connectionState === 'connected'"
VIEWER_SAYS_UNREACHABLE = "document.getElementById('message').textContent.includes('not reachable')"
GIVE_UP_S = 60.0  # Chromium calls the media connection failed ~15-30 s after the server froze


@pytest.mark.slow
async def test_the_pages_say_a_frozen_server_is_not_reachable_and_the_page_lets_the_user_start_again(
        browser: Any) -> None:
    """Not "reconnecting…" for as long as the server stays frozen: its status requests time out."""
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--host", "127.0.0.1",
                               "--port", url.rsplit(":", 1)[1], "--max-sessions", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_healthy(url, server)
        page = await browser.new_page()
        await page.goto(url)
        await page.click("#start")
        await page.wait_for_function(CONNECTED, timeout=30_000)
        viewer = await browser.new_page()
        await viewer.goto(f"{url}/view/{await page.evaluate('window.lipstream.sessionId')}")
        await viewer.wait_for_function(VIEWER_CONNECTED, timeout=30_000)
        os.kill(server.pid, signal.SIGSTOP)
        await page.wait_for_selector("#error:not([hidden])", timeout=GIVE_UP_S * 1000)
        said = await page.locator("#error").inner_text()
        assert "not reachable" in said or "not answering" in said, said
        assert await page.locator("#start").is_enabled()
        await page.wait_for_function("!document.getElementById('status').textContent.startsWith('Stopping')",
                                     timeout=GIVE_UP_S * 1000)
        await viewer.wait_for_function(VIEWER_SAYS_UNREACHABLE, timeout=GIVE_UP_S * 1000)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(30)
