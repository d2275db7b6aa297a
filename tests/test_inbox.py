"""The inbox's cushion in time: 20 ms packets arrive at their own times (clean, late, in bursts)
while frames are taken at exactly 25 per second. Checked: the least delay on a clean stream, no
speech cut or dropped there, the delay back to that least soon after a burst of underruns, and
the depth bounded whatever arrives."""

import random
from collections.abc import Callable

import numpy as np
import pytest

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.inbox import AudioInbox, InboxConfig, InboxStats
from lipstream.streaming.metrics import ServerMetrics

PACKET_S = 0.02
PACKET = round(PACKET_S * SAMPLE_RATE)  # 320 samples
FRAME_S = SAMPLES_PER_VIDEO_FRAME / SAMPLE_RATE
FRAME_MS = FRAME_S * 1000
LEAST_WAIT_MS = 20  # the least cushion beyond a frame, on a clean network
BACK_S = 1.5  # the lossy-network test measures the beeps' lag from this long after the loss ends
SPEECH_S, PAUSE_S = 0.8, 0.2  # words, and the pauses between them

Delay = Callable[[int], float]  # packet index -> seconds it arrives after it was sent


def speech(seconds: float) -> np.ndarray:
    """Loud words with pauses; every loud sample distinct, so a dropped one is told."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.where(t % (SPEECH_S + PAUSE_S) < SPEECH_S, 0.5 + t, 0.0).astype(np.float32)


def stream(inbox: AudioInbox, seconds: float, delay: Delay, phase_s: float = 0.013,
           played: list[np.ndarray] | None = None) -> list[tuple[float, int]]:
    """Send `seconds` of speech in 20 ms packets, each arriving `delay(n)` after its send time,
    and take a frame every 40 ms (`phase_s` into each frame), into `played`. Returns the depth
    (ms) right before each take, and the cushion (ms) then."""
    audio = speech(seconds)
    arrivals = sorted((n * PACKET_S + delay(n), n) for n in range(audio.size // PACKET))
    depths, i = [], 0
    for k in range(round(seconds / FRAME_S)):
        tick = k * FRAME_S + phase_s
        while i < len(arrivals) and arrivals[i][0] <= tick:
            n = arrivals[i][1]
            inbox.push(audio[n * PACKET : (n + 1) * PACKET])
            i += 1
        depths.append((inbox.depth_ms, inbox.cushion_ms))
        out = inbox.take()
        if played is not None:
            played.append(out)
    return depths


def clean(seed: int) -> Delay:
    """Loopback: a millisecond of scheduling noise at most."""
    rng = random.Random(seed)
    return lambda n: rng.uniform(0.0, 0.001)


def test_a_clean_stream_waits_only_the_least_cushion_and_cuts_no_speech() -> None:
    for seed, phase_s in enumerate((0.001, 0.013, 0.027, 0.039)):
        inbox = AudioInbox()
        played: list[np.ndarray] = []
        depths = [depth for depth, _ in stream(inbox, 30.0, clean(seed), phase_s, played)]
        words = np.concatenate(played)
        words = words[words != 0]
        sent = speech(30.0)
        assert inbox.stats.underruns == 0 and np.array_equal(words, sent[sent != 0][: words.size]), phase_s
        assert words.size >= np.count_nonzero(sent) - 2 * SAMPLES_PER_VIDEO_FRAME  # all but the tail
        # before a take: the frame, the cushion, and less than one more packet
        assert max(depths[25:]) < FRAME_MS + LEAST_WAIT_MS + PACKET_S * 1000, (phase_s, max(depths[25:]))


def stalls(*at_s: tuple[float, float]) -> Delay:
    """Clean, except that the packets sent during each (start, length) stall arrive together
    when it ends: a jittery network or a server's stalled event loop."""
    def delay(n: int) -> float:
        sent = n * PACKET_S
        return next((start + length - sent for start, length in at_s if start <= sent < start + length), 0.0)
    return delay


def test_the_delay_is_back_to_its_least_soon_after_a_burst_of_underruns() -> None:
    """Growing stalls, two a second, then calm: within BACK_S the cushion is back at its least
    and the excess it held is gone (not one step per calm second)."""
    config = InboxConfig()
    inbox = AudioInbox(config)
    calm_from_s = 7.0
    seen = stream(inbox, 12.0, stalls(*((3.0 + k / 2, 0.04 * (k + 1)) for k in range(8))))
    assert inbox.stats.underruns >= 3, inbox.stats  # the stalls did cut in...
    assert max(cushion for _, cushion in seen) >= 80  # ...and grew the cushion
    back = seen[round((calm_from_s + BACK_S) / FRAME_S) :]
    assert config.target_ms == LEAST_WAIT_MS and all(cushion == LEAST_WAIT_MS for _, cushion in back), back
    assert max(depth for depth, _ in back) < FRAME_MS + LEAST_WAIT_MS + PACKET_S * 1000, back


def test_a_grown_cushion_absorbs_stalls_like_the_ones_that_grew_it() -> None:
    """Thirty stalls of 100 ms, two a second: a step of cushion per underrun until it covers
    them, then no more words cut (it does not shrink back while the stalls go on)."""
    config = InboxConfig()
    inbox = AudioInbox(config)
    stream(inbox, 20.0, stalls(*((2.0 + k / 2, 0.1) for k in range(30))))
    steps = -(-(100 - config.target_ms) // config.grow_ms)
    assert 1 <= inbox.stats.underruns <= steps + 1, inbox.stats


def test_the_depth_stays_bounded_whatever_arrives() -> None:
    config = InboxConfig()
    inbox = AudioInbox(config)
    rng = random.Random(5)
    seen = stream(inbox, 20.0, lambda n: rng.choice((0.0, 0.0, 0.0, rng.uniform(0.0, 0.5))))
    assert max(depth for depth, _ in seen) <= config.max_ms + PACKET_S * 1000
    assert inbox.depth_ms <= config.max_ms


def drifting(rate: float) -> Delay:
    """A sender whose clock runs `rate` times the server's (a microphone is 50-500 ppm off)."""
    return lambda n: n * PACKET_S * (1 / rate - 1)


@pytest.mark.parametrize("rate", [0.9995, 1.0005])  # 500 ppm slow, and fast
def test_a_sender_whose_clock_drifts_keeps_the_least_delay_and_cuts_no_words(rate: float) -> None:
    """Four minutes of words and pauses from a sender 500 ppm off. A slow one ate the cushion
    until a word was cut (an underrun every minute or so, each a 40-80 ms hole, for as long as it
    talks); the pauses give it back, as a fast one's excess goes in them."""
    seconds = 240.0
    for phase_s in (0.001, 0.027):
        inbox = AudioInbox()
        played: list[np.ndarray] = []
        depths = [depth for depth, _ in stream(inbox, seconds, drifting(rate), phase_s, played)]
        words, sent = np.concatenate(played), speech(seconds)
        words, sent = words[words != 0], sent[sent != 0]
        intact = np.array_equal(words, sent[: words.size])
        assert inbox.stats.underruns == 0 and intact, (phase_s, inbox.stats)
        last_minute = depths[-round(60 / FRAME_S) : -round(2 / FRAME_S)]  # the stream's end runs dry
        assert max(last_minute) <= FRAME_MS + LEAST_WAIT_MS + PACKET_S * 1000, (phase_s, max(last_minute))


def test_the_silence_put_back_for_a_slow_sender_is_counted_in_the_metrics() -> None:
    """An operator sees the padding as the dropping: seconds of inbound audio, in /metrics."""
    metrics, inbox = ServerMetrics(), AudioInbox()
    for _ in stream(inbox, 120.0, drifting(0.9995), 0.001, []):
        pass
    metrics.count_inbox(inbox.stats, InboxStats())
    metrics.count_inbox(inbox.stats, inbox.stats)  # nothing new since: nothing more counted
    padded = metrics.registry.get_sample_value("lipstream_input_padded_seconds_total")
    assert inbox.stats.padded_samples > 0
    assert padded == pytest.approx(inbox.stats.padded_samples / SAMPLE_RATE)
