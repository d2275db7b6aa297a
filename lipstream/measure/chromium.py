"""Headless Debian Chromium as the receiver being measured: found, launched, and hooked so that
each frame it presents comes back with its times and the pixels of the avatar's mouth box.

Driven by pip playwright with the system browser (never `playwright install`: that downloads
one). `requestVideoFrameCallback` runs once per presented frame and gives, for WebRTC video,
`presentationTime` (handed to the compositor) and `receiveTime` (its last packet arrived), both
on the page's `performance.now()` clock; `page_clock` maps that clock onto `time.monotonic()`.
"""

import base64
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # only a type here: tests' browser helpers import this module, not the detector
    from lipstream.measure.mouth import MouthBox

# NOTES.md: what headless Chromium needs for WebRTC on loopback (playwright adds --headless and
# --no-sandbox itself, and passes the profile folder).
CHROMIUM_FLAGS = (
    "--disable-gpu",
    "--allow-loopback-in-peer-connection",  # ICE over 127.0.0.1, where the server lives
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic",
)
# A viewer plays with sound, as OBS's Browser Source does: without this, headless Chromium refuses
# autoplay with sound (no click) and the viewer page falls back to muted video.
AUTOPLAY_WITH_SOUND = "--autoplay-policy=no-user-gesture-required"
CLOCK_PROBES = 20  # round trips to the page; the shortest bounds the clock offset best
RGBA = 4  # bytes per pixel of canvas ImageData

# Installed before the page's own scripts: once the page has a <video>, every frame it presents
# is drawn (its mouth box only, at the detector's frame side) and kept with its times until
# Python takes them. Pixels travel as base64 RGBA: small (the box is a few thousand pixels).
HOOK_JS = """([box, side]) => {
  const kept = [];
  let missed = 0;
  window.lipstreamFrames = { take: () => { const out = kept.splice(0); return { frames: out, missed }; } };
  const canvas = new OffscreenCanvas(box.width, box.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const encode = (bytes) => {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  };
  const watch = (video) => {
    let last = null;
    const onFrame = (now, meta) => {
      const sx = video.videoWidth / side, sy = video.videoHeight / side;
      context.drawImage(video, box.left * sx, box.top * sy, box.width * sx, box.height * sy,
                        0, 0, box.width, box.height);
      if (last !== null) missed += Math.max(0, meta.presentedFrames - last - 1);
      last = meta.presentedFrames;
      kept.push({ presented: meta.presentationTime, received: meta.receiveTime ?? null,
                  rtp: meta.rtpTimestamp ?? null, muted: video.muted,
                  rgba: encode(context.getImageData(0, 0, box.width, box.height).data) });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  const find = () => {
    const video = document.querySelector("video");
    if (video) watch(video); else setTimeout(find, 10);
  };
  find();
}"""

# Replaces the jitterBufferTarget setter before the page's scripts run, so that whatever the page
# asks for is ignored: the browser's default playout delay, for comparison with the hint.
IGNORE_HINT_JS = """() => {
  const own = Object.getOwnPropertyDescriptor(RTCRtpReceiver.prototype, "jitterBufferTarget");
  Object.defineProperty(RTCRtpReceiver.prototype, "jitterBufferTarget", {
    configurable: true, get() { return own.get.call(this); }, set(ms) {},
  });
}"""


class ChromiumMissing(RuntimeError):
    """No Chromium (or no playwright) to measure with."""


@dataclass(frozen=True)
class CropBox:
    """The part of each presented frame that is shipped back: the detector's mouth box and
    `margin` pixels around it (its shifts reach that far), in a frame of side `side`."""

    top: int
    left: int
    height: int
    width: int
    side: int

    @classmethod
    def around(cls, box: "MouthBox", side: int, margin: int) -> "CropBox":
        top, left = max(box.top - margin, 0), max(box.left - margin, 0)
        bottom, right = min(box.bottom + margin, side), min(box.right + margin, side)
        return cls(top, left, bottom - top, right - left, side)

    def frame(self, rgba_b64: str) -> np.ndarray:
        """A (side, side, 3) RGB frame: the shipped pixels in place, black elsewhere."""
        rgba = np.frombuffer(base64.b64decode(rgba_b64), np.uint8).reshape(self.height, self.width, RGBA)
        out = np.zeros((self.side, self.side, 3), np.uint8)
        out[self.top : self.top + self.height, self.left : self.left + self.width] = rgba[..., :3]
        return out

    def hook_script(self) -> str:
        box = {"top": self.top, "left": self.left, "height": self.height, "width": self.width}
        return f"({HOOK_JS})([{box!r}, {self.side}])".replace("'", '"')


def chromium_path() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


def playwright_driver() -> Any:
    """playwright's async context manager (ChromiumMissing if playwright is not installed)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError as missing:
        raise ChromiumMissing("playwright is not installed: pip install playwright (it drives the "
                              "system chromium; `playwright install` is not needed)") from missing
    return async_playwright()


async def launch_browser(playwright: Any) -> Any:
    """Headless system Chromium, ready for loopback WebRTC (ChromiumMissing if there is none)."""
    path = chromium_path()
    if path is None:
        raise ChromiumMissing("chromium is not installed: apt-get install chromium")
    return await playwright.chromium.launch(executable_path=path, headless=True,
                                            args=[*CHROMIUM_FLAGS, AUTOPLAY_WITH_SOUND])


@dataclass(frozen=True)
class PageClock:
    """time.monotonic() = page's performance.now() / 1000 + offset_s, within +/- uncertainty_s."""

    offset_s: float
    uncertainty_s: float

    def monotonic(self, page_ms: float | None) -> float:
        return float("nan") if page_ms is None else page_ms / 1000 + self.offset_s


async def page_clock(page: Any) -> PageClock:
    """The offset from the round trip with the shortest time: the page read its clock somewhere
    within it, so half of it bounds the error."""
    best: tuple[float, float] | None = None
    for _ in range(CLOCK_PROBES):
        sent = time.monotonic()
        page_ms = await page.evaluate("performance.now()")
        back = time.monotonic()
        if best is None or back - sent < best[1]:
            best = ((sent + back) / 2 - page_ms / 1000, back - sent)
    assert best is not None
    return PageClock(best[0], best[1] / 2)
