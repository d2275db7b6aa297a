"""A real aiortc publisher talks to `lipstream serve` through a lossy relay (tests/relay.py):
clean, then 5% loss with 20 +/- 10 ms jitter both ways, clean again, a 5 s outage, clean.

Checked: ~25 fps, audio and video arrive together, the latency the loss added is gone once the
loss stops (beeps' media-time lag, which includes every server-side buffer), the session
survives the outage."""

import asyncio
import os
import warnings
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import pytest

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.engine.engine import Engine
from lipstream.streaming.client import Publisher, Reception, realtime_fps, received_audio, transport_offsets_s
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.server import ServeConfig
from lipstream.streaming.session import Session
from tests.relay import OUTAGE, Impairment, UdpRelay, relayed
from tests.serving import MachineLoad, loopback_only, running_server

BEEP_PERIOD_S = 1.0  # a lag change up to half of this is told apart
BEEP_S = 0.06
LOSSY = Impairment(loss=0.05, delay_ms=20, jitter_ms=10)
# 15 s keeps CI short; LIPSTREAM_LOSSY_S=60 runs the minute of impairment
LOSSY_S = float(os.environ.get("LIPSTREAM_LOSSY_S", "15"))
# Phases, seconds after the publisher connects: (name, length, impairment)
PHASES: tuple[tuple[str, float, Impairment | None], ...] = (
    ("before", 6.0, None), ("lossy", LOSSY_S, LOSSY), ("after", 6.0, None),
    ("outage", 5.0, OUTAGE), ("recovered", 4.0, None),
)
SETTLE_S = 1.5  # a phase's first seconds belong to the one before (recovery within a second)


def beeps(seconds: float) -> np.ndarray:
    """A 1 kHz beep every BEEP_PERIOD_S: sharp onsets whose lag is easy to read back."""
    t = np.arange(int(BEEP_S * SAMPLE_RATE)) / SAMPLE_RATE
    beep = 0.5 * np.sin(2 * np.pi * 1000 * t) * np.hanning(t.size) ** 0.1
    pcm = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    for start in range(0, pcm.size - beep.size, int(BEEP_PERIOD_S * SAMPLE_RATE)):
        pcm[start : start + beep.size] = beep
    return pcm


@dataclass
class Run:
    reception: Reception
    phase_start_s: dict[str, float] = field(default_factory=dict)  # seconds after connecting
    depth_ms: dict[str, list[float]] = field(default_factory=dict)  # server inbox, sampled
    inbox_at_start: dict[str, tuple[int, int]] = field(default_factory=dict)  # underruns, dropped
    # Video frames whose packets reached the client by then. (Decoded frames resume later: aiortc's
    # receiver asks for a keyframe only ~5 s after a long gap; a browser asks at once.)
    frames_at_end: dict[str, int] = field(default_factory=dict)
    end_reason: str | None = None  # the session's, if it ended before the publisher left
    packets: dict[str, int] = field(default_factory=dict)  # the server's jitter buffer outcomes
    busy_cores: float = 0.0  # what other programs took of the CPU meanwhile

    def summary(self) -> str:
        depth = {n: round(float(np.median(v)), 1) for n, v in self.depth_ms.items()}
        lags = {n: np.round(_phase_lags_ms(self, n)).tolist() for n, _, _ in PHASES}
        return (f"inbox depth median ms {depth}; beep lags ms {lags}; inbox (underruns, dropped) at "
                f"phase starts {self.inbox_at_start}; packets {self.packets}; "
                f"other programs used {self.busy_cores:.1f} cores")


async def _phases(relay: UdpRelay, session: Session, run: Run) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for name, length_s, impairment in PHASES:
        run.phase_start_s[name] = loop.time() - t0
        run.inbox_at_start[name] = (session.inbox.stats.underruns, session.inbox.stats.dropped_samples)
        relay.impair(impairment)
        samples = run.depth_ms.setdefault(name, [])
        while loop.time() - t0 < run.phase_start_s[name] + length_s:
            samples.append(session.inbox.depth_ms)
            await asyncio.sleep(0.02)
        run.frames_at_end[name] = len(run.reception.rtp_arrival["video"])


async def _record(avatar: Avatar) -> Run:
    config = ServeConfig(max_sessions=1, loopback_ice=False)
    assert config.session.transport_timeout_s > 5  # the session outlives the 5 s outage
    total_s = sum(length for _, length, _ in PHASES) + 5
    seams = {"load_avatar": lambda: avatar, "engine_factory": Engine}
    async with running_server(config, **seams) as server, relayed(server.url) as (url, relay), \
            aiohttp.ClientSession() as http:
        publisher = Publisher(url, beeps(total_s))
        await publisher.start(http)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        session = next(iter(server.state.sessions.values()))
        run = Run(publisher.received)
        await _phases(relay, session, run)
        run.end_reason, run.packets = session.end_reason, _packet_outcomes(server.state.metrics)
        await publisher.stop(http)
        return run


def _packet_outcomes(metrics: ServerMetrics) -> dict[str, int]:
    """The server's jitter buffer outcomes (played, fec, plc, late, ...) from its /metrics."""
    return {sample.labels["result"]: int(sample.value) for family in metrics.input_packets.collect()
            for sample in family.samples if sample.name.endswith("_total")}


@pytest.fixture(scope="module")
def run() -> Run:
    avatar = Avatar.default(AvatarConfig(size=256))  # as test_webrtc: the engine is not under test
    with pytest.MonkeyPatch.context() as patch, MachineLoad() as load:
        loopback_only(patch)
        recorded = asyncio.run(_record(avatar))
    recorded.busy_cores = load.others_cores
    return recorded


def _onsets_s(reception: Reception) -> np.ndarray:
    """Media times (server clock) where a received beep starts."""
    audio, rate = received_audio(reception)
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    starts = [i for j, i in enumerate(loud) if j == 0 or i - loud[j - 1] > rate * BEEP_PERIOD_S / 2]
    return np.array(starts) / rate


def _phase_lags_ms(run: Run, name: str) -> np.ndarray:
    """Each beep's lag within its period (the constant origin offset falls out when compared)."""
    onsets = _onsets_s(run.reception)
    start = run.phase_start_s[name] + SETTLE_S
    end = run.phase_start_s[name] + dict((n, s) for n, s, _ in PHASES)[name]
    chosen = onsets[(onsets >= start) & (onsets < end)]
    return (chosen % BEEP_PERIOD_S) * 1000


def _judged(run: Run, said: str) -> bool:
    """Real-time criteria hold on a machine with a core to spare; on a busier one, warn instead."""
    if run.busy_cores < 1.0:
        return True
    warnings.warn(f"not judged (busy machine): {said}", stacklevel=2)
    return False


def test_frames_keep_coming_at_25_fps_through_loss_and_jitter(run: Run) -> None:
    fps = realtime_fps(run.reception)
    if _judged(run, f"{fps:.2f} fps; {run.summary()}"):
        assert fps >= 24.0, f"{fps:.2f} fps; {run.summary()}"


def test_audio_and_video_arrive_together_on_a_lossy_network(run: Run) -> None:
    offsets_ms = transport_offsets_s(run.reception) * 1000
    median, p10, p90 = np.percentile(offsets_ms, [50, 10, 90])
    print(f"A/V at the receiver: median {median:.1f} ms (10-90%: {p10:.1f}..{p90:.1f}); "
          f"{realtime_fps(run.reception):.2f} fps")
    assert abs(median) <= 20, f"median {median:.1f} ms (10-90%: {p10:.1f}..{p90:.1f})"


def test_loss_adds_no_lasting_latency(run: Run) -> None:
    """The server-side input delay (how long audio waits in the inbox for its frame), and the
    beeps' lag through the whole server, are back within 20 ms of before once the loss stops."""
    before, after = (float(np.median(run.depth_ms[n])) for n in ("before", "after"))
    lag_before, lag_after = (float(np.median(_phase_lags_ms(run, n))) for n in ("before", "after"))
    said = (f"inbox depth {before:.0f} -> {after:.0f} ms, beep lag {lag_before:.0f} -> {lag_after:.0f} ms; "
            f"{run.summary()}")
    print(f"lossy network ({LOSSY_S:g} s of loss and jitter): {said}")  # the figures, with pytest -s
    if _judged(run, said):
        assert after - before <= 20, said  # less is fine: latency added is what must not last
        assert lag_after - lag_before <= 20, said  # every server-side buffer, end to end


def test_the_session_survives_a_5_s_outage(run: Run) -> None:
    assert run.end_reason is None
    recovered = run.frames_at_end["recovered"] - run.frames_at_end["outage"]
    length_s = dict((n, s) for n, s, _ in PHASES)["recovered"]
    assert recovered >= 0.5 * length_s * 25, f"{recovered} frames in {length_s} s after the outage"
