"""A sender's rate follows the receiver's estimate (REMB) without rebuilding its encoder (a
keyframe) on every wobble: a deep fall at once, a shallow one only if it lasts, rises spaced out."""

from fractions import Fraction

import av
import numpy as np
import pytest

from lipstream.streaming.clock import FRAME_S
from lipstream.streaming.codecs import TunedH264Encoder, TunedVp8Encoder, Vp8Tuning
from lipstream.streaming.sendrate import (
    CEILING_BPS_AT_SIDE,
    CEILING_SIDE_PX,
    ESTIMATE_BACKOFF,
    FALL_AT_ONCE,
    FOLLOW_EVERY_MOVE,
    HOLD_S,
)

REMB_INTERVAL_S = 1.0  # aiortc's receiver sends a REMB about once a second
CEILING = CEILING_BPS_AT_SIDE  # the rate a 512 px face sits at while the estimate is above it


class FakeTime:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


Encoder = TunedVp8Encoder | TunedH264Encoder
ENCODERS = pytest.mark.parametrize("make", [TunedVp8Encoder, TunedH264Encoder], ids=["vp8", "h264"])


def play(encoder: Encoder, time: FakeTime, estimates: list[int]) -> list[int]:
    """Feed one estimate per REMB interval; the rate the sender encodes at after each."""
    rates = []
    for estimate in estimates:
        encoder.target_bitrate = estimate
        rates.append(encoder.target_bitrate)
        time.s += REMB_INTERVAL_S
    return rates


def at_ceiling(make: type[Encoder]) -> tuple[Encoder, FakeTime]:
    time = FakeTime()
    encoder = make(now=time)
    play(encoder, time, [1_500_000] * 10)
    assert encoder.target_bitrate == CEILING
    return encoder, time


@ENCODERS
def test_a_wobble_below_the_ceiling_is_held(make: type[Encoder]) -> None:
    """An aiortc receiver's estimate, measured on loopback, swings 0.7-1.3 Mbit/s: one backoff
    (x0.85) below the ceiling and back within two seconds moves nothing."""
    encoder, time = at_ceiling(make)
    wobble = [1_300_000, 680_000, 730_000, 1_100_000, 700_000, 760_000, 1_250_000] * 5
    assert play(encoder, time, wobble) == [CEILING] * len(wobble)


@ENCODERS
def test_a_fall_of_two_backoffs_is_followed_at_once(make: type[Encoder]) -> None:
    encoder, time = at_ceiling(make)
    congested = round(CEILING * ESTIMATE_BACKOFF**2)
    assert play(encoder, time, [congested]) == [congested]
    assert pytest.approx(0.2775) == FALL_AT_ONCE


@ENCODERS
def test_a_shallow_fall_that_lasts_is_followed_after_the_hold(make: type[Encoder]) -> None:
    encoder, time = at_ceiling(make)
    lower = round(CEILING * ESTIMATE_BACKOFF)
    held_for = int(HOLD_S // REMB_INTERVAL_S) + 1  # REMBs until the hold has passed
    rates = play(encoder, time, [lower] * (held_for + 1))
    assert rates[:held_for] == [CEILING] * held_for
    assert rates[held_for] == lower


@ENCODERS
def test_rises_are_spaced_by_the_hold(make: type[Encoder]) -> None:
    """After congestion the estimate climbs 8% a second; the rate climbs with it in steps (one
    rebuild each) no closer than HOLD_S, up to the ceiling."""
    encoder, time = at_ceiling(make)
    climb = [round(400_000 * 1.08**i) for i in range(12)]
    rates = play(encoder, time, climb)
    moves = [i for i in range(1, len(rates)) if rates[i] != rates[i - 1]]
    assert rates[0] == 400_000 and rates[-1] > 600_000
    assert all(b - a >= HOLD_S / REMB_INTERVAL_S for a, b in zip([0, *moves], moves, strict=False))
    assert len(moves) == 2  # following every move would rebuild 11 times


@ENCODERS
def test_the_hold_expires_between_estimates(make: type[Encoder]) -> None:
    """A held fall is taken at the first frame after the hold, not at the next REMB."""
    encoder, time = at_ceiling(make)
    still = np.zeros((CEILING_SIDE_PX, CEILING_SIDE_PX, 3), np.uint8)
    frame = av.VideoFrame.from_ndarray(still, format="rgb24")
    frame.pts, frame.time_base = 0, Fraction(1, 90_000)
    encoder.target_bitrate = lower = round(CEILING * ESTIMATE_BACKOFF)
    encoder.encode(frame)
    assert encoder.target_bitrate == CEILING
    time.s += HOLD_S + FRAME_S  # the first frame after the hold
    encoder.encode(frame)
    assert encoder.target_bitrate == lower


# An aiortc receiver's estimate (kbit/s), once a second, from benchmarks/rebuilds.py on loopback
# (the sender that followed every move): the start-up climb, wobbles under the ceiling, then a
# delay ramp (a queue filling) at second 33.
MEASURED_KBPS = [500, 500, 500, 444, 481, 521, 564, 612, 636, 685, 685, 713, 742, 755, 771, 835, 835,
                 869, 905, 907, 907, 907, 414, 426, 451, 477, 505, 535, 579, 628, 653, 707, 766, 384,
                 185, 153, 192, 235, 220, 226, 211, 179, 230, 230, 223, 236, 264, 281]
CONGESTED_AT = MEASURED_KBPS.index(384)


def rebuilds(rates: list[int]) -> int:
    """How often aiortc builds a new encoder for these rates: each move of over 10%."""
    built, count = rates[0], 0
    for rate in rates:
        if abs(rate - built) / built > 0.1:
            built, count = rate, count + 1
    return count


class FollowsEveryMove(TunedVp8Encoder):
    tuning = Vp8Tuning(rate_hold=FOLLOW_EVERY_MOVE)


def test_a_measured_estimate_rebuilds_less_and_congestion_still_lowers_it_at_once() -> None:
    estimates = [kbps * 1000 for kbps in MEASURED_KBPS]
    time = FakeTime()
    held = play(TunedVp8Encoder(now=time), time, estimates)
    following = play(FollowsEveryMove(now=time), time, estimates)
    assert (rebuilds(following), rebuilds(held)) == (13, 7), (following, held)
    assert held[CONGESTED_AT] == estimates[CONGESTED_AT]  # the first lower estimate, not later
