"""The latency instruments: the mouth-open detector agrees with FaceMesh, and a measurement
against a real server recovers a delay injected on purpose."""

import numpy as np
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.render import Renderer
from lipstream.measure.latency import LatencyConfig, measure
from lipstream.measure.mouth import MouthOpenDetector, jaw_controls
from lipstream.streaming.server import ServeConfig
from tests.serving import loopback_only, running_server

INJECTED_DELAY_MS = 100.0
TOLERANCE_MS = 30.0  # medians of several onsets on a shared 2-core machine


@pytest.fixture(scope="module")
def detector() -> MouthOpenDetector:
    return MouthOpenDetector(Avatar.default(), size=256)


@pytest.mark.parametrize("index", [3, 61, 140, 222])  # different idle poses and blinks than calibration
def test_detector_and_facemesh_agree_on_rendered_frames(detector: MouthOpenDetector, index: int) -> None:
    renderer = Renderer(Avatar.default(), seed=7)
    closed, opened = (renderer.render(jaw_controls(jaw), index) for jaw in (0.0, 0.6))
    assert not detector.is_open(closed) and detector.facemesh_open(closed) is False
    assert detector.is_open(opened) and detector.facemesh_open(opened) is True
    assert detector.score(opened) > 4 * detector.threshold > 4 * detector.score(closed)


def median_to_rtp_ms(onsets: list) -> float:
    found = [o.to_rtp_ms for o in onsets if not np.isnan(o.to_rtp_ms)]
    assert len(found) >= 4, f"too few onsets measured: {onsets}"
    return float(np.median(found))


@pytest.mark.slow
async def test_an_injected_delay_is_recovered(monkeypatch: pytest.MonkeyPatch,
                                              detector: MouthOpenDetector) -> None:
    """The client delays its sound by 100 ms after stamping the onsets: the measured onset ->
    mouth-open latency grows by that much, and nothing else changes between the two runs."""
    loopback_only(monkeypatch)
    medians = []
    async with running_server(ServeConfig(max_sessions=1, loopback_ice=False)) as server:
        for delay_ms in (0.0, INJECTED_DELAY_MS):
            run = await measure(server.url, LatencyConfig(onsets=8, delay_s=delay_ms / 1000), detector)
            assert run.detector_agreement > 0.9
            medians.append(median_to_rtp_ms(run.onsets))
    assert abs(medians[1] - medians[0] - INJECTED_DELAY_MS) <= TOLERANCE_MS, medians
