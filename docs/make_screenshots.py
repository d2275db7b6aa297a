"""Screenshots of the real page for the docs: before Start, live, ended, a refused photo, and a
phone's width. A real `lipstream serve` on loopback and headless Chromium whose fake microphone
speaks a sentence (espeak-ng).

    python docs/make_screenshots.py [--out docs/screenshots]
"""

import argparse
import asyncio
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.server import ServeConfig
from tests.browser import launch, write_fake_mic_wav
from tests.serving import running_server

DESKTOP = {"width": 1280, "height": 900}  # issue 13's view of the page
PHONE = {"width": 390, "height": 844}
SETTLE_S = 6.0  # live: the status line has a 3 s frame-rate window and a server load reading
SPEAKING_LEVEL = 0.1  # shoot while the fake microphone speaks, so the level meter shows it
LIVE = "window.lipstream.pc && window.lipstream.pc.connectionState === 'connected'"


def fake_mic(folder: Path) -> Path:
    spoken = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), "Papa bought a big map. Mama, look at the moon!"],
                   check=True, capture_output=True)
    speech = load_audio(spoken)
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * 0.7
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)  # Chromium loops the file
    return write_fake_mic_wav(folder / "mic48k.wav", np.concatenate([pad, speech, pad]))


async def shoot(page: Any, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(path)


async def session_shots(page: Any, url: str, out: Path) -> None:
    await page.goto(url)
    await page.wait_for_selector("#preview:not([hidden])")
    await shoot(page, out, "1-before-start")
    await page.click("#start")
    await page.wait_for_function(LIVE, timeout=20_000)
    await asyncio.sleep(SETTLE_S)
    await page.wait_for_function(f"window.lipstream.live.micLevel > {SPEAKING_LEVEL}", timeout=10_000)
    await shoot(page, out, "2-live")
    await page.click("#stop")
    await page.wait_for_function("document.getElementById('status').textContent.includes('ended')")
    await shoot(page, out, "3-ended")


async def refused_photo_shot(page: Any, url: str, out: Path, folder: Path) -> None:
    blank = folder / "wall.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (200, 190, 170)).save(blank)  # a photo of a wall: no face
    await page.goto(url)
    await page.set_input_files("#photo", str(blank))
    await page.wait_for_selector("#photo-note.problem")
    await shoot(page, out, "4-photo-without-a-face")


async def main(out: Path) -> None:
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        async with running_server(ServeConfig(max_sessions=2)) as server, async_playwright() as pw:
            browser = await launch(pw, folder / "profile", fake_mic(folder))
            page = await browser.new_page()
            await page.set_viewport_size(DESKTOP)
            await session_shots(page, server.url + "/", out)
            await refused_photo_shot(page, server.url + "/", out, folder)
            phone = await browser.new_page()
            await phone.set_viewport_size(PHONE)
            await phone.goto(server.url + "/")
            await phone.wait_for_selector("#preview:not([hidden])")
            await shoot(phone, out, "5-phone-width")
            await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    asyncio.run(main(parser.parse_args().out))
