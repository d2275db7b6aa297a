"""Speech onset -> the mouth opening in what headless Chromium presents: the viewer page with
and without its playout-delay hint, side by side, against a real server; the same detector as
the aiortc measurement decides on the pixels the page sends back."""

import asyncio
import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lipstream.cli import main
from lipstream.engine.avatar import Avatar
from lipstream.engine.render import Renderer
from lipstream.measure.browser_latency import (
    PAGES,
    BrowserConfig,
    BrowserRun,
    PageOnset,
    PageRun,
    crop_for,
    measure_browser,
)
from lipstream.measure.browser_report import summarise
from lipstream.measure.counting import decode_everything, skip_video_decoding
from lipstream.measure.latency import LatencyConfig
from lipstream.measure.mouth import MouthOpenDetector, jaw_controls
from lipstream.measure.report import BUSY_FRACTION, delay_recovered_ms
from lipstream.measure.server import free_port, spawned_server
from lipstream.streaming.clock import FRAME_S
from tests.browser import chromium_executable
from tests.serving import loopback_only

FRAME_MS = FRAME_S * 1000
SERVER_TOKEN = "browser-latency-token"
INJECTED_DELAY_MS = 3 * FRAME_MS  # whole frames: the first open frame moves by exactly that many
# The recovered delay is a difference of two medians of 4 onsets each, and with Chromium decoding two
# pages on the same 2 cores the server's own onset -> RTP time varies by up to ~130 ms between onsets
# of one session (measured over 6 runs: 113-242 ms); the recovered delay fell 52.7 ms short in 1 of
# those 12 page runs and 54.3 in one earlier CI run. Two frames still fail a delay not applied (0) or
# applied twice (240).
RECOVERED_TOLERANCE_MS = 2 * FRAME_MS
LATENCY_BOUND_MS = 1000.0  # generous: a shared 2-core machine; the figure itself is the benchmark's
CLOCK_BOUND_MS = 5.0  # the page's clock is mapped onto this process's within this
FOUND_FRACTION = 0.75  # of the onsets a page was presenting for


@pytest.fixture(scope="module")
def detector() -> MouthOpenDetector:
    return MouthOpenDetector(Avatar.default())


def shipped(crop_frame: np.ndarray, detector: MouthOpenDetector) -> str:
    """What the page sends back for a frame: its crop as base64 RGBA."""
    crop = crop_for(detector)
    rows, cols = slice(crop.top, crop.top + crop.height), slice(crop.left, crop.left + crop.width)
    rgba = np.concatenate([crop_frame[rows, cols], np.full((crop.height, crop.width, 1), 255, np.uint8)], 2)
    return base64.b64encode(rgba.tobytes()).decode()


@pytest.mark.parametrize("jaw", [0.0, 0.1, 0.6])
def test_the_mouth_box_the_page_sends_scores_as_the_whole_frame(detector: MouthOpenDetector,
                                                                jaw: float) -> None:
    frame = Renderer(Avatar.default(), seed=3).render(jaw_controls(jaw), 17)
    assert detector.score(crop_for(detector).frame(shipped(frame, detector))) == detector.score(frame)


@pytest.mark.slow
def test_chromium_presents_the_open_mouth_and_an_injected_delay_is_recovered(
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
        detector: MouthOpenDetector) -> None:
    """Every other burst starts 120 ms after its stamped onset: in both pages those onsets are
    presented 120 ms later (within two frames: the server's own latency varies between onsets on
    a loaded machine) and the page adds the same time to both kinds, within a frame; every latency
    is positive and below a bound.

    The server runs as users run it, in a process of its own (as the benchmark spawns it): in
    this one it would share the interpreter with the publisher and playwright."""
    chromium_executable()
    pytest.importorskip("playwright")
    loopback_only(monkeypatch)
    request.addfinalizer(decode_everything)  # later tests in this process decode what they receive
    skip_video_decoding()
    config = BrowserConfig(LatencyConfig(onsets=8, lead_s=5.0, inject_delay_s=INJECTED_DELAY_MS / 1000))
    with spawned_server("--max-sessions", "1") as server:
        run = asyncio.run(measure_browser(server.url, config, detector))
    if run.skipped_fraction > BUSY_FRACTION:  # the benchmark's own validity rule
        pytest.skip(f"the server skipped {run.skipped_fraction:.0%} of frames (busy machine): "
                    f"a latency measured now is not the server's: {run.pages}")
    assert [page.name for page in run.pages] == list(PAGES)
    for page in run.pages:
        found = [o for o in page.onsets if not math.isnan(o.to_presented_ms)]
        assert len(page.onsets) >= run.onsets_sent - 2, page  # the page presented before most onsets
        assert len(found) >= FOUND_FRACTION * len(page.onsets), page
        assert all(0 < o.to_received_ms <= o.to_presented_ms < LATENCY_BOUND_MS for o in found), page
        assert page.clock_uncertainty_ms < CLOCK_BOUND_MS and not page.muted, page
        assert page.targets and all(t == (None if PAGES[page.name] else 0) for t in page.targets), page
        recovered = delay_recovered_ms([(o.injected_delay_ms, o.to_presented_ms) for o in page.onsets])
        at_arrival = delay_recovered_ms([(o.injected_delay_ms, o.to_received_ms) for o in page.onsets])
        assert abs(recovered - INJECTED_DELAY_MS) <= RECOVERED_TOLERANCE_MS, (recovered, page)
        # what the page adds between arrival and presentation does not depend on the delay
        assert abs(recovered - at_arrival) <= FRAME_MS, (recovered, at_arrival, page)


def test_the_summary_takes_percentiles_over_plain_onsets_and_recovers_the_injected_delay() -> None:
    def onset(n: int, presented_ms: float) -> PageOnset:
        return PageOnset(2.0 * n, 120.0 * (n % 2), presented_ms - 20, presented_ms)

    page = PageRun("hint", [onset(0, 200), onset(1, 320), onset(2, 240), onset(3, math.nan)], frames=100,
                   missed_frames=1, clock_uncertainty_ms=0.5, muted=False, targets=[0, 0])
    summary = summarise(BrowserRun([page], onsets_sent=5, server_frames={"rendered": 99, "skipped": 1}))
    figures = summary["pages"]["hint"]
    assert (figures["onsets"], figures["found"]) == (4, 3)
    assert figures["to_presented_ms"] == {"p50": 220.0, "p95": 238.0, "n": 2}
    assert figures["to_received_ms"]["p50"] == 200.0
    assert figures["injected_delay_recovered_ms"] == {"received": 100.0, "presented": 100.0}
    assert summary["server_not_in_time_fraction"] == 0.01


@pytest.mark.slow
def test_bench_latency_browser_measures_a_server_with_a_token(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With --token, the publisher gives the token and both viewer pages open the link the page
    would hand to OBS, with the viewer token the server answered the session with: they present
    frames and see the mouth open. Before, --browser refused any --token (the pages went without)."""
    chromium_executable()
    pytest.importorskip("playwright")
    out = tmp_path / "latency.json"
    try:
        with spawned_server("--max-sessions", "1", "--token", SERVER_TOKEN) as server:
            code = main(["bench", "--latency", server.url, "--browser", "--token", SERVER_TOKEN,
                         "--onsets", "3", "--json", str(out)])
    finally:
        decode_everything()  # the command stops this process decoding video, for its publisher
    assert code == 0, capsys.readouterr().err
    summary = json.loads(out.read_text())["summary"]
    assert list(summary["pages"]) == list(PAGES)
    for name, page in summary["pages"].items():  # a refused viewer page presents nothing
        assert page["frames"] > 0 and page["jitter_buffer_targets_ms"], (name, page)
    if summary["server_not_in_time_fraction"] > BUSY_FRACTION:
        pytest.skip(f"the server skipped {summary['server_not_in_time_fraction']:.0%} of frames: busy")
    assert all(page["found"] >= 1 for page in summary["pages"].values()), summary


def test_bench_latency_browser_with_a_wrong_token_is_refused_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    chromium_executable()
    pytest.importorskip("playwright")
    err = _refused_browser_bench(["--token", "not-the-token", "--onsets", "1"], tmp_path, capsys)
    assert err.startswith("lipstream bench: error: ") and "401" in err and "\n" not in err, err


def test_a_viewer_page_the_server_refuses_is_said_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A viewer link the server does not accept (here: without its viewer token) stops the run
    with the server's reason; it ran to the end and reported 0 frames in each page."""
    chromium_executable()
    pytest.importorskip("playwright")
    import lipstream.measure.browser_latency as browser_latency

    link = browser_latency.viewer_link
    monkeypatch.setattr(browser_latency, "viewer_link", lambda publisher: link(publisher).split("?")[0])
    err = _refused_browser_bench(["--token", SERVER_TOKEN, "--onsets", "20"], tmp_path, capsys)
    assert err.startswith("lipstream bench: error: the server refused the viewer page"), err
    assert "\n" not in err
    assert not (tmp_path / "out.json").exists()


def test_bench_latency_browser_says_in_one_line_that_nothing_answers_at_the_url(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    chromium_executable()
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["bench", "--latency", url, "--browser", "--onsets", "1", "--json", str(tmp_path / "out.json")]
    try:
        assert main(argv) == 2
    finally:
        decode_everything()  # the command stops this process decoding video, for its publisher
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lipstream bench: error: cannot reach {url}") and "\n" not in err, err


def _refused_browser_bench(options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`bench --latency --browser` with `options` against a server with a token: it must exit 2;
    what it said on stderr."""
    argv = ["bench", "--latency", "", "--browser", *options, "--json", str(tmp_path / "out.json")]
    try:
        with spawned_server("--max-sessions", "1", "--token", SERVER_TOKEN) as server:
            argv[2] = server.url
            assert main(argv) == 2
    finally:
        decode_everything()
    return capsys.readouterr().err.strip()
