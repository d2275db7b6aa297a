"""The receive path's own logic on a lossy network, without a machine's load in the way: the
relay's impairment (tests/relay.py: 5% loss, 20 +/- 10 ms) applied to a packet schedule, through
the real JitterBuffer and AudioInbox, with frames taken at exactly 25 per second.

tests/test_lossy_network.py checks the same end to end through aiortc, but on a shared 2-core
machine its figures move with whatever else runs; these do not."""

import heapq
import random
from dataclasses import dataclass

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.jitterbuffer import JitterBuffer, Play, Playout
from tests.test_lossy_network import BEEP_PERIOD_S, LOSSY, SETTLE_S, beeps

PACKET_S = 0.02
PACKET = round(PACKET_S * SAMPLE_RATE)
TICKS = 960  # RTP ticks per 20 ms packet at 48 kHz
FRAME_S = SAMPLES_PER_VIDEO_FRAME / SAMPLE_RATE
TICK_PHASE_S = 0.013  # where in each packet's time the frames are taken
BEFORE_S, LOSSY_S, AFTER_S = 6.0, 60.0, 6.0


@dataclass(frozen=True)
class Outcome:
    underruns_while_lossy: int
    lag_before_ms: float  # the beeps' median lag, as test_lossy_network reads it
    lag_after_ms: float


def arrivals(seed: int) -> list[tuple[float, int]]:
    """(arrival time, packet index), impaired between BEFORE_S and BEFORE_S + LOSSY_S."""
    rng = random.Random(seed)
    out = []
    for n in range(round((BEFORE_S + LOSSY_S + AFTER_S) / PACKET_S)):
        sent = n * PACKET_S
        lossy = BEFORE_S <= sent < BEFORE_S + LOSSY_S
        if lossy and rng.random() < LOSSY.loss:
            continue
        delay_ms = LOSSY.delay_ms + rng.uniform(-1, 1) * LOSSY.jitter_ms if lossy else rng.uniform(0, 1)
        out.append((sent + delay_ms / 1000, n))
    return sorted(out)


def run(seed: int) -> Outcome:
    audio = beeps(BEFORE_S + LOSSY_S + AFTER_S + 1)
    buffer, inbox = JitterBuffer(), AudioInbox()
    played: list[np.ndarray] = []
    underruns_at: list[int] = []

    def play(items: list[Playout]) -> None:
        for item in items:
            if item.play is Play.RESUME:
                inbox.pause()
                continue
            n = int(item.payload) - (item.play is Play.FEC) if item.payload else -1
            inbox.push(audio[n * PACKET : (n + 1) * PACKET] if n >= 0 else np.zeros(PACKET, np.float32))

    frames = round((BEFORE_S + LOSSY_S + AFTER_S) / FRAME_S)
    events = [(t, 0, n) for t, n in arrivals(seed)]
    events += [(k * FRAME_S + TICK_PHASE_S, 1, k) for k in range(frames)]
    heapq.heapify(events)
    while events:
        now, is_tick, n = heapq.heappop(events)
        while (deadline := buffer.deadline()) is not None and deadline <= now:
            play(buffer.release(deadline))
        if is_tick:
            played.append(inbox.take())
            underruns_at.append(inbox.stats.underruns)
        else:
            play(buffer.push(n % (1 << 16), n * TICKS % (1 << 32), str(n).encode(), now, inbox.reserve_ms))
    lossy_frames = slice(round(BEFORE_S / FRAME_S), round((BEFORE_S + LOSSY_S) / FRAME_S))
    lossy_underruns = underruns_at[lossy_frames.stop] - underruns_at[lossy_frames.start]
    return Outcome(lossy_underruns, *(median_lag_ms(np.concatenate(played), start, start + length)
                                      for start, length in ((0.0, BEFORE_S), (BEFORE_S + LOSSY_S, AFTER_S))))


def median_lag_ms(audio: np.ndarray, start_s: float, end_s: float) -> float:
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    onsets_s = np.array([i for j, i in enumerate(loud) if j == 0 or i - loud[j - 1] > SAMPLE_RATE // 2])
    onsets_s = onsets_s / SAMPLE_RATE
    chosen = onsets_s[(onsets_s >= start_s + SETTLE_S) & (onsets_s < end_s)]
    return float(np.median(chosen % BEEP_PERIOD_S)) * 1000


def test_a_minute_of_loss_and_jitter_cuts_few_words_and_leaves_no_lasting_delay() -> None:
    outcomes = [run(seed) for seed in range(1, 6)]
    said = "; ".join(f"{o.underruns_while_lossy} underruns, lag {o.lag_before_ms:.0f} -> "
                     f"{o.lag_after_ms:.0f} ms" for o in outcomes)
    print(f"a minute of 5% loss and 20 +/- 10 ms jitter, simulated: {said}")
    # a loss rebuilt from FEC need not be waited for: a few underruns a minute, from jitter peaks
    assert np.median([o.underruns_while_lossy for o in outcomes]) <= 8, said
    assert all(o.lag_after_ms - o.lag_before_ms <= 20 for o in outcomes), said
    assert all(o.lag_before_ms <= 60 for o in outcomes), said  # the frame and the 20 ms cushion
