"""The server's own audio receive path: jitter buffer on crafted RTP sequences, libopus FEC and
PLC on real Opus, the inbox's cushion, and the producer's just-in-time lead on a ManualClock."""

import asyncio

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.clock import ManualClock, MediaClock
from lipstream.streaming.inbox import AudioInbox, InboxConfig
from lipstream.streaming.jitterbuffer import JitterBuffer, JitterConfig, Playout
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.opus import OpusDecoder, OpusEncoder
from lipstream.streaming.pacing import FramePacer, PacingConfig
from lipstream.streaming.rtpaudio import OpusReceiver
from tests.producing import SlowEngine, drive, made

TICKS = 960  # one 20 ms packet at Opus's 48 kHz RTP clock
PACKET = SAMPLE_RATE // 50  # 320 samples at 16 kHz
WAIT_S = JitterConfig().reorder_ms / 1000


def kinds(items: list[Playout]) -> list[str]:
    return [f"{i.play.value}:{i.payload.decode()}" if i.payload else i.play.value for i in items]


def push(buffer: JitterBuffer, seq: int, now_s: float = 0.0, ts: int | None = None) -> list[str]:
    stamp = (seq * TICKS) % (1 << 32) if ts is None else ts
    return kinds(buffer.push(seq % (1 << 16), stamp, str(seq).encode(), now_s))


def test_in_order_packets_play_on_arrival_with_no_delay() -> None:
    buffer = JitterBuffer()
    assert [push(buffer, s, s * 0.02) for s in range(3)] == [["packet:0"], ["packet:1"], ["packet:2"]]


def test_reordered_packets_play_in_sequence() -> None:
    buffer = JitterBuffer()
    assert push(buffer, 10) == ["packet:10"]
    assert push(buffer, 12, 0.01) == []  # 11 may still come
    assert push(buffer, 11, 0.02) == ["packet:11", "packet:12"]
    assert buffer.stats.fec == buffer.stats.plc == 0


def test_a_lost_packet_is_rebuilt_from_the_next_ones_fec_after_the_wait() -> None:
    buffer = JitterBuffer()
    push(buffer, 0)
    assert push(buffer, 2, 0.02) == []
    assert buffer.deadline() == pytest.approx(0.02 + WAIT_S)
    assert kinds(buffer.release(0.02 + WAIT_S - 0.001)) == []
    assert kinds(buffer.release(0.02 + WAIT_S)) == ["fec:2", "packet:2"]
    assert push(buffer, 3, 0.08) == ["packet:3"]  # back to no delay at once: never stays deeper


def test_two_lost_packets_are_concealed_then_rebuilt() -> None:
    buffer = JitterBuffer()
    push(buffer, 0)
    push(buffer, 3, 0.02)
    assert kinds(buffer.release(1.0)) == ["plc", "fec:3", "packet:3"]
    assert (buffer.stats.plc, buffer.stats.fec) == (1, 1)


def test_duplicates_and_late_packets_are_dropped() -> None:
    buffer = JitterBuffer()
    push(buffer, 0)
    assert push(buffer, 0, 0.001) == []
    push(buffer, 2, 0.02)
    buffer.release(1.0)  # 1 given up
    assert push(buffer, 1, 1.01) == []  # too late: already concealed
    assert (buffer.stats.duplicates, buffer.stats.late, buffer.stats.played) == (1, 1, 2)


def test_sequence_numbers_wrap() -> None:
    buffer = JitterBuffer()
    assert push(buffer, 65534) == ["packet:65534"]
    assert push(buffer, 65536, 0.02) == []  # 0 after the wrap; 65535 missing
    assert push(buffer, 65535, 0.03) == ["packet:65535", "packet:65536"]
    assert push(buffer, 65537, 0.04) == ["packet:65537"]
    assert buffer.stats.late == 0


def test_dtx_gap_is_a_pause_not_a_loss() -> None:
    buffer = JitterBuffer()
    push(buffer, 0, 0.0, ts=0)
    push(buffer, 1, 0.02, ts=TICKS)
    # the sender went silent for 400 ms: the next packet is next in sequence, its timestamp jumps
    assert push(buffer, 2, 0.42, ts=21 * TICKS) == ["resume", "packet:2"]
    assert push(buffer, 3, 0.44, ts=22 * TICKS) == ["packet:3"]
    assert buffer.stats.plc == buffer.stats.fec == 0


def test_an_outage_is_skipped_at_once_not_concealed() -> None:
    buffer = JitterBuffer()
    push(buffer, 0)
    assert push(buffer, 250, 5.0) == ["resume", "packet:250"]  # 5 s later: no 5 s of PLC
    assert buffer.stats.skipped == 249 and buffer.stats.plc == 0


def speechlike(seconds: float) -> np.ndarray:
    """A voiced, pitch-gliding, amplitude-modulated tone with a little noise (deterministic)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * (140 * t + 20 * np.sin(2 * np.pi * 0.7 * t))
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.2 * voiced + 0.01 * noise).astype(np.float32)


def test_libopus_fec_rebuilds_a_lost_packet_better_than_concealment() -> None:
    audio = speechlike(2.0)
    encoder = OpusEncoder(loss_percent=20)
    packets = [encoder.encode(audio[i : i + PACKET]) for i in range(0, audio.size, PACKET)]
    reference = OpusDecoder()
    clean = [reference.decode(p) for p in packets]
    errors = {}
    for mode in ("fec", "plc"):
        decoder, lost = OpusDecoder(), 50
        for p in packets[:lost]:
            decoder.decode(p)
        got = decoder.recover(packets[lost + 1], PACKET) if mode == "fec" else decoder.conceal(PACKET)
        assert got.shape == (PACKET,) and got.dtype == np.float32
        errors[mode] = float(np.sqrt(np.mean((got - clean[lost]) ** 2)))
    assert errors["fec"] < 0.8 * errors["plc"], errors


def lossy_packets(encoder: OpusEncoder, seqs: tuple[int, ...]) -> list[RtpPacket]:
    audio = speechlike(0.1)
    return [RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * TICKS,
                      payload=encoder.encode(audio[seq * PACKET : (seq + 1) * PACKET])) for seq in seqs]


async def test_receiver_conceals_a_loss_on_its_own_timer_and_decodes_at_16k() -> None:
    clock = ManualClock()
    inbox = AudioInbox()
    inbox.push(np.zeros(SAMPLES_PER_VIDEO_FRAME + PACKET * 4, np.float32))  # 80 ms to spare: 2 is waited for
    receiver = OpusReceiver(inbox, MediaClock(clock), ServerMetrics())
    for packet in lossy_packets(OpusEncoder(loss_percent=20), (0, 1, 3)):  # 2 is lost, nothing after 3
        await receiver._handle(packet, 0)
    assert inbox.depth_ms == pytest.approx(120 + 40)  # 0 and 1 at once, at 16 kHz, no resampler
    task = asyncio.create_task(receiver.run())
    while clock.sleepers == 0:
        await asyncio.sleep(0)
    clock.release_next()  # the wait for 2 is over
    for _ in range(5):
        await asyncio.sleep(0)
    assert inbox.depth_ms == pytest.approx(120 + 80) and receiver.buffer.stats.fec == 1
    task.cancel()


async def test_a_loss_is_not_waited_for_longer_than_the_inbox_can_spare() -> None:
    """The inbox holds no more than its next frame: waiting for a missing packet would cut the
    speech, so it is rebuilt from the next one's FEC as soon as that one is here."""
    inbox = AudioInbox()
    receiver = OpusReceiver(inbox, MediaClock(ManualClock()), ServerMetrics())
    for packet in lossy_packets(OpusEncoder(loss_percent=20), (0, 1, 3)):
        await receiver._handle(packet, 0)
    assert inbox.depth_ms == pytest.approx(80) and receiver.buffer.stats.fec == 1


def test_the_wait_for_a_missing_packet_is_the_reserve_given_at_most_reorder_ms() -> None:
    buffer = JitterBuffer()
    push(buffer, 0)
    assert kinds(buffer.push(2, 2 * TICKS, b"2", 0.02, reserve_ms=10)) == []
    assert buffer.deadline() == pytest.approx(0.02 + 0.010)  # the gap's wait was set as it opened
    assert kinds(buffer.push(3, 3 * TICKS, b"3", 0.025, reserve_ms=500)) == []
    assert buffer.deadline() == pytest.approx(0.02 + 0.010)
    assert kinds(buffer.release(0.03)) == ["fec:2", "packet:2", "packet:3"]
    push(buffer, 4, 0.04)
    assert kinds(buffer.push(6, 6 * TICKS, b"6", 0.06, reserve_ms=500)) == []
    assert buffer.deadline() == pytest.approx(0.06 + WAIT_S)  # never longer than reorder_ms


def test_inbox_drains_a_burst_at_a_quiet_moment_and_keeps_its_cushion() -> None:
    config = InboxConfig()
    inbox = AudioInbox(config)
    inbox.push(np.zeros(SAMPLES_PER_VIDEO_FRAME + config.samples(config.target_ms + 100), np.float32))
    depths = []
    for _ in range(25):  # one second of steady input: a frame in per frame out
        depths.append(inbox.depth_ms)
        inbox.take()
        inbox.push(np.zeros(SAMPLES_PER_VIDEO_FRAME, np.float32))
    assert depths[0] == pytest.approx(40 + config.target_ms + 100)
    assert max(depths[-10:]) <= 40 + config.target_ms + config.slack_ms  # drained, and stays
    assert inbox.stats.underruns == 0


def test_inbox_waits_longer_before_cutting_speech() -> None:
    config = InboxConfig()
    inbox = AudioInbox(config)
    loud = np.full(SAMPLES_PER_VIDEO_FRAME, 0.3, np.float32)
    inbox.push(np.full(SAMPLES_PER_VIDEO_FRAME + config.samples(config.target_ms + 100), 0.3, np.float32))
    dropped_at = None
    for n in range(40):
        inbox.take()
        inbox.push(loud)
        if dropped_at is None and inbox.stats.dropped_samples:
            dropped_at = n
    waited_ms = (dropped_at + 1) * 40 if dropped_at is not None else 0
    assert waited_ms >= config.drain_force_ms - 40  # loud: held the whole forced wait
    assert inbox.depth_ms <= 40 + config.target_ms + config.packet_ms  # a packet waits for a quiet moment


def test_inbox_keeps_what_jitter_needs() -> None:
    """Bursty arrival (two frames' worth every other frame) peaks above the cushion: kept; the
    cushion grows to cover it after at most one underrun, and none after that."""
    inbox = AudioInbox()
    inbox.push(np.zeros(inbox._keep, np.float32))
    for n in range(100):
        inbox.take()
        if n % 2:
            inbox.push(np.zeros(2 * SAMPLES_PER_VIDEO_FRAME, np.float32))
    assert inbox.stats.dropped_samples == 0 and inbox.stats.underruns <= 1


def test_inbox_counts_a_late_packet_but_not_a_senders_pause() -> None:
    inbox = AudioInbox(InboxConfig(target_ms=0))
    inbox.push(np.ones(SAMPLES_PER_VIDEO_FRAME, np.float32))
    inbox.take()
    inbox.take()  # dry
    inbox.pause()  # ...because the sender paused (DTX)
    inbox.push(np.ones(SAMPLES_PER_VIDEO_FRAME, np.float32))
    assert inbox.stats.underruns == 0
    inbox.take()
    inbox.take()  # dry again, and this time speech was late
    inbox.push(np.ones(SAMPLES_PER_VIDEO_FRAME, np.float32))
    assert inbox.stats.underruns == 1


def test_dtx_keepalives_do_not_pile_up_into_delay() -> None:
    """In DTX a sender sends one 20 ms packet per 400 ms: they must not wait, stale, for speech."""
    inbox = AudioInbox()
    for _ in range(30):
        inbox.pause()  # the receive path saw the timestamp jump
        inbox.push(np.zeros(PACKET, np.float32))
        for _ in range(10):
            inbox.take()
    assert inbox.depth_ms <= PACKET * 1000 / SAMPLE_RATE
    assert inbox.stats.underruns == 0


async def produce(engine: SlowEngine, frames: int) -> FramePacer:
    """The pacer of a producer that made `frames` frames of `engine`, timed on its own clock."""
    producer = await drive(engine, made(frames), timer=engine.now)
    return producer.pacer


async def test_the_lead_follows_render_time_and_its_jitter() -> None:
    config = PacingConfig()
    steady = await produce(SlowEngine(cost_s=0.020), 50)
    assert steady.lead_s() == pytest.approx(0.020 + config.margin_ms / 1000, abs=1e-3)
    jittery = await produce(SlowEngine(cost_s=0.020, jitter_s=0.012), 100)
    assert 0.020 + 0.012 <= jittery.lead_s() <= config.lead_ms / 1000  # covers the slow ones
    fast = await produce(SlowEngine(cost_s=0.0), 20)
    assert fast.lead_s() == config.min_lead_ms / 1000
    assert steady.counts["skipped"] == jittery.counts["skipped"] == fast.counts["skipped"] == 0


async def test_an_engine_slower_than_the_longest_lead_skips_instead_of_queueing() -> None:
    slow = await produce(SlowEngine(cost_s=0.100), 20)
    assert slow.lead_s() == PacingConfig().lead_ms / 1000
    assert slow.counts["skipped"] > 0 and slow.counts["rendered"] > 0


def test_inbox_cushion_grows_after_underruns_and_settles_back() -> None:
    """A jittery network or a busy server: after a few underruns words stop being cut, and once
    calm returns the delay goes back to its floor."""
    config = InboxConfig()
    inbox = AudioInbox(config)
    frame = np.full(SAMPLES_PER_VIDEO_FRAME, 0.3, np.float32)
    inbox.push(np.full(inbox._keep, 0.3, np.float32))
    for _ in range(4):  # speech keeps arriving late: 160 ms at a time, after the inbox ran dry
        while inbox.take().any():
            pass
        for _ in range(4):
            inbox.push(frame)
    assert inbox.stats.underruns == 4  # each dry for a frame: the cushion grows by that, at least a step
    assert min(config.target_ms + 4 * config.grow_ms, config.max_target_ms) <= inbox.cushion_ms
    assert inbox.cushion_ms <= config.max_target_ms
    for _ in range(config.settle_ms // 40 + 1):  # calm: a frame in per frame out, the cushion unused
        inbox.take()
        inbox.push(frame)
    assert inbox.cushion_ms == config.target_ms
