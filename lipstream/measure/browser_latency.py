"""Speech onset -> the mouth opening in what headless Chromium *presents*, with and without the
viewer page's playout-delay hint, side by side in one session.

An aiortc publisher owns the session and sends the voiced bursts of `latency.onset_schedule`
(their send times stamped by `SpeechTrack`); Chromium watches the same session through the
viewer page twice: as shipped (`jitterBufferTarget = 0`) and with the hint ignored (the
browser's default). Every frame each page presents comes back with its `receiveTime`,
`presentationTime` and its mouth-box pixels, and the detector the aiortc measurement uses
decides whether the mouth is open. The publisher does not decode its own video: the CPU goes to
the server and the browser being measured.
"""

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import ServerError
from lipstream.measure.chromium import (
    IGNORE_HINT_JS,
    CropBox,
    PageClock,
    launch_browser,
    page_clock,
    playwright_driver,
)
from lipstream.measure.latency import (
    LatencyConfig,
    connected,
    first_open_after,
    injected_delay_s,
    not_in_time_fraction,
    onset_schedule,
    reaching,
)
from lipstream.measure.mouth import REFERENCE_SIZE, SHIFT_PX, MouthOpenDetector
from lipstream.measure.server import frame_counts, scrape
from lipstream.measure.speech import SpeechTrack
from lipstream.streaming.client import Publisher
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES

PAGES = {"hint": False, "no hint": True}  # page name -> the hint is ignored
VIEWER_TIMEOUT_S = 30.0  # a page's first presented frame, on a busy machine
TAKE_EVERY_S = 1.0  # frames are fetched from the pages this often (their memory stays small)
# The viewer page's own peer connection (viewer.js exposes it for tests): what the hint became.
TARGETS_JS = "(window.lipstreamViewer.pc?.getReceivers() ?? []).map((r) => r.jitterBufferTarget)"
REFUSED_JS = "window.lipstreamViewer.refused"  # viewer.js: why the server refused the page's link
TAIL_S = 0.5  # kept watching after the last chunk was sent: its frames are still on the way


@dataclass(frozen=True)
class BrowserConfig:
    # The pages open after the session starts: a longer silence than the aiortc measurement's,
    # so that both are presenting before the first burst (onsets before that are left out).
    latency: LatencyConfig = LatencyConfig(lead_s=5.0)


@dataclass(frozen=True)
class PageOnset:
    onset_s: float  # media time of the onset in the sent audio
    injected_delay_ms: float
    to_received_ms: float  # onset -> the first open-mouth frame's receiveTime; nan if none found
    to_presented_ms: float  # onset -> that frame's presentationTime


@dataclass
class PageFrames:
    """What one page presented; times on this process's time.monotonic()."""

    name: str
    clock: PageClock
    received: list[float] = field(default_factory=list)
    presented: list[float] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # mouth-box RGBA, base64 (CropBox.frame)
    missed: int = 0  # frames presented without a callback (the first open one may be among them)
    muted: bool = False
    targets: list[float | None] = field(default_factory=list)  # jitterBufferTarget read back, ms


@dataclass(frozen=True)
class PageRun:
    name: str
    onsets: list[PageOnset]
    frames: int
    missed_frames: int
    clock_uncertainty_ms: float
    muted: bool  # played without sound (autoplay refused)
    targets: list[float | None]  # each receiver's jitterBufferTarget at the end: 0 hinted, None not


@dataclass(frozen=True)
class BrowserRun:
    pages: list[PageRun]
    onsets_sent: int
    server_frames: dict[str, float]  # rendered/skipped/late during the run

    @property
    def skipped_fraction(self) -> float:
        return not_in_time_fraction(self.server_frames)


def crop_for(detector: MouthOpenDetector) -> CropBox:
    """The detector's box with room for the shifts it tries (a bound on its own reach)."""
    return CropBox.around(detector.box, detector.size, 1 + SHIFT_PX * detector.size // REFERENCE_SIZE)


async def measure_browser(url: str, config: BrowserConfig, detector: MouthOpenDetector,
                          token: str | None = None) -> BrowserRun:
    """One session at `url` (published with the server's `token`, if it has one) watched by
    both pages; per page and onset, its latencies."""
    pcm, starts = onset_schedule(config.latency)
    track = SpeechTrack(pcm)
    crop = crop_for(detector)
    with reaching(url):
        async with aiohttp.ClientSession() as http, playwright_driver() as playwright:
            pages, before, after = await watched_session(url, http, playwright, pcm, track, crop, token)
    frames = {k: v - frame_counts(before).get(k, 0) for k, v in frame_counts(after).items()}
    runs = [page_run(frames_of, track, starts, config.latency, detector) for _, frames_of in pages]
    return BrowserRun(runs, len(starts), frames)


async def watched_session(url: str, http: aiohttp.ClientSession, playwright: Any, pcm: np.ndarray,
                          track: SpeechTrack, crop: CropBox,
                          token: str | None = None) -> tuple[list[tuple[Any, PageFrames]], str, str]:
    """Publish `pcm` through `track` and watch it with both pages; their frames, /metrics before and after."""
    browser = await launch_browser(playwright)
    try:
        async with publishing(url, http, pcm, track, token) as publisher:
            before = await scrape(http, url)
            pages = await asyncio.gather(*(watch(browser, publisher, crop, name, ignore)
                                           for name, ignore in PAGES.items()))
            await collect(pages, track, pcm.size / SAMPLE_RATE + TAIL_S)
            after = await scrape(http, url)
    finally:
        await browser.close()
    return pages, before, after


@asynccontextmanager
async def publishing(url: str, http: aiohttp.ClientSession, pcm: np.ndarray,
                     track: SpeechTrack, token: str | None = None) -> AsyncIterator[Publisher]:
    publisher = Publisher(url, pcm, token=token, track=track, keep_audio=False)
    await publisher.start(http)
    try:
        await connected(publisher, url, VIEWER_TIMEOUT_S)
        yield publisher
    finally:
        await publisher.stop(http)


async def watch(browser: Any, publisher: Publisher, crop: CropBox, name: str,
                ignore_hint: bool) -> tuple[Any, PageFrames]:
    """A viewer page of the publisher's session, presenting frames (its own browser context, so
    that the hint is ignored in one page only). The window is the video's size: Chromium
    composites it in software here, and a larger window costs CPU the server is measured on."""
    context = await browser.new_context(viewport={"width": crop.side, "height": crop.side})
    await context.add_init_script(crop.hook_script())
    if ignore_hint:
        await context.add_init_script(f"({IGNORE_HINT_JS})()")
    page = await context.new_page()
    await page.goto(viewer_link(publisher))
    await page.wait_for_function("window.lipstreamFrames && window.lipstreamFrames.take",
                                 timeout=VIEWER_TIMEOUT_S * 1000)
    return page, PageFrames(name, await page_clock(page))


def viewer_link(publisher: Publisher) -> str:
    """The session's viewer page as the page's OBS link gives it (obs.js): with the viewer token
    the server answered the session with, if it has tokens; never the server's own token."""
    assert publisher.location is not None
    session_id = publisher.location.rsplit("/", 1)[-1]
    query = f"?token={quote(publisher.viewer_token, safe='')}" if publisher.viewer_token else ""
    return f"{publisher.base_url}/view/{session_id}{query}"


async def collect(pages: list[tuple[Any, PageFrames]], track: SpeechTrack, media_s: float) -> None:
    """Take the pages' frames until the sent audio (and `TAIL_S`) has played out."""
    give_up = time.monotonic() + VIEWER_TIMEOUT_S + media_s  # the track never started: no sender

    def end() -> float:
        return track.handed_at[0] + media_s if track.handed_at else give_up

    while time.monotonic() < end():
        await asyncio.sleep(TAKE_EVERY_S)
        await take_all(pages)
    await take_all(pages)
    for page, frames in pages:
        frames.targets = await page.evaluate(TARGETS_JS)


async def take_all(pages: list[tuple[Any, PageFrames]]) -> None:
    """Each page's frames since the last take; a page the server refused ends the run (it
    would present nothing, and the run would end with empty figures and no reason)."""
    for page, frames in pages:
        take(frames, await page.evaluate("window.lipstreamFrames.take()"))
        if (refused := await page.evaluate(REFUSED_JS)) is not None:
            raise ServerError(f"the server refused the viewer page ({frames.name}): {refused}")


def take(into: PageFrames, taken: dict[str, Any]) -> None:
    into.missed = taken["missed"]
    for frame in taken["frames"]:
        into.received.append(into.clock.monotonic(frame["received"]))
        into.presented.append(into.clock.monotonic(frame["presented"]))
        into.images.append(frame["rgba"])
        into.muted = into.muted or frame["muted"]


def page_run(frames: PageFrames, track: SpeechTrack, starts: list[int], config: LatencyConfig,
             detector: MouthOpenDetector) -> PageRun:
    """Per onset sent after the page was presenting: the first open-mouth frame's latencies."""
    crop = crop_for(detector)
    opened = [detector.is_open(crop.frame(rgba)) for rgba in frames.images]
    presented, received = np.asarray(frames.presented), np.asarray(frames.received)
    window_s = config.burst_s + config.gap_s
    rows = []
    for n, start in enumerate(starts[: len(track.handed_at)]):
        onset_t = track.handed_at[start]
        if presented.size == 0 or onset_t <= presented[0]:
            continue  # the page was not presenting yet: nothing says the mouth was at rest
        i = first_open_after(onset_t, window_s, presented, opened)
        rows.append(PageOnset(round(start * AUDIO_CHUNK_SAMPLES / SAMPLE_RATE, 3),
                              injected_delay_s(config, n) * 1000,
                              _ms(received[i] - onset_t) if i is not None else math.nan,
                              _ms(presented[i] - onset_t) if i is not None else math.nan))
    return PageRun(frames.name, rows, len(opened), frames.missed,
                   round(frames.clock.uncertainty_s * 1000, 2), frames.muted, frames.targets)


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1000, 1)
