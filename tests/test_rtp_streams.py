"""What a publisher may send the server's receive path (OpusReceiver: the real jitter buffer,
libopus and inbox): only Opus, whatever codec its offer puts first; a stream restarted with a new
SSRC; packets that change length mid-stream. Real Opus packets arrive at their scheduled times on a
ManualClock while frames are taken at exactly 25 per second; checked: the beeps sent afterwards are
heard, on time."""

import heapq
import re
from dataclasses import dataclass

import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import RtpPacket

from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.streaming.client import PcmTrack
from lipstream.streaming.clock import ManualClock, MediaClock
from lipstream.streaming.encoders import VP8
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.opus import MAX_PACKET_MS, OPUS_CLOCK_RATE, OpusEncoder
from lipstream.streaming.rtpaudio import OpusReceiver
from lipstream.streaming.session import answer_offer, new_peer_connection
from tests.serving import SILENCE
from tests.test_lossy_network import BEEP_PERIOD_S, beeps

FRAME_S = SAMPLES_PER_VIDEO_FRAME / SAMPLE_RATE
TICK_PHASE_S = 0.013  # where in each packet's time the frames are taken
ARRIVAL_S = 0.0005  # loopback: each packet half a millisecond after it was sent
OPUS_PT = 111
LOUD = 0.1


@dataclass(frozen=True)
class Sent:
    at_s: float  # when it arrives
    packet: RtpPacket


def stream(seconds: float, start_s: float, seq: int, timestamp: int, ssrc: int = 1,
           packet_ms: int = 20, encoder: OpusEncoder | None = None) -> list[Sent]:
    """`seconds` of beeps (one per BEEP_PERIOD_S) in `packet_ms` Opus packets, sent from `start_s`."""
    encoder = encoder or OpusEncoder()
    pcm, samples = beeps(seconds), SAMPLE_RATE * packet_ms // 1000
    ticks = OPUS_CLOCK_RATE * packet_ms // 1000
    return [Sent(start_s + n * packet_ms / 1000 + ARRIVAL_S,
                 RtpPacket(payload_type=OPUS_PT, sequence_number=(seq + n) % (1 << 16),
                           timestamp=(timestamp + n * ticks) % (1 << 32), ssrc=ssrc,
                           payload=encoder.encode(pcm[n * samples : (n + 1) * samples])))
            for n in range(pcm.size // samples)]


async def listen(sent: list[Sent], seconds: float) -> tuple[OpusReceiver, np.ndarray]:
    """What the engine is handed, frame by frame, while `sent` arrives: 16 kHz audio."""
    clock = ManualClock(0.0)
    receiver = OpusReceiver(AudioInbox(), MediaClock(clock), ServerMetrics())
    events = [(s.at_s, 0, n) for n, s in enumerate(sent)]
    events += [(k * FRAME_S + TICK_PHASE_S, 1, k) for k in range(round(seconds / FRAME_S))]
    heapq.heapify(events)
    taken = []
    while events:
        now, is_take, n = heapq.heappop(events)
        while (deadline := receiver.buffer.deadline()) is not None and deadline <= now:
            clock._now = max(clock.now(), deadline)  # the receiver's own timer, as run() wakes it
            receiver._play(receiver.buffer.release(deadline))
        clock._now = max(clock.now(), now)
        if is_take:
            taken.append(receiver.inbox.take())
        else:
            await receiver._handle(sent[n].packet, 0)
    return receiver, np.concatenate(taken)


def beep_lags_ms(audio: np.ndarray, from_s: float, to_s: float) -> np.ndarray:
    """Each beep heard between from_s and to_s: how late within its period (the send schedule's)."""
    loud = np.flatnonzero(np.abs(audio) > LOUD)
    starts = np.array([i for j, i in enumerate(loud) if j == 0 or i - loud[j - 1] > SAMPLE_RATE // 2])
    onsets_s = starts / SAMPLE_RATE
    chosen = onsets_s[(onsets_s >= from_s) & (onsets_s < to_s)]
    return (chosen % BEEP_PERIOD_S) * 1000


async def test_a_new_ssrc_is_a_new_stream_heard_at_once_whatever_its_sequence_numbers() -> None:
    """A sender that restarts its stream (a new SSRC) starts its sequence numbers anywhere: half
    the time behind the old ones. They are not 'late' packets of the old stream (dropped until the
    new numbers caught up: minutes of silence), nor duplicates of it."""
    for back in (30, 20_000):  # packets the new stream's numbers start behind the old one's
        old = stream(10.0, 0.0, seq=40_000, timestamp=5_000)
        new = stream(10.0, 10.0, seq=40_000 + len(old) - back, timestamp=77_777, ssrc=2)
        receiver, heard = await listen(old + new, 20.0)
        before, after = beep_lags_ms(heard, 1.0, 10.0), beep_lags_ms(heard, 10.0, 20.0)
        assert (len(before), len(after)) == (9, 10), (back, receiver.buffer.stats)  # the first one too
        assert abs(float(np.median(after)) - float(np.median(before))) <= FRAME_S * 1000, (before, after)


def stalled(sent: list[Sent], at_s: float, length_s: float) -> list[Sent]:
    """The packets sent during the stall arrive together when it ends (a jittery network)."""
    return [Sent(at_s + length_s, s.packet) if at_s <= s.at_s < at_s + length_s else s for s in sent]


async def test_a_sender_that_lengthens_its_packets_is_still_heard_after_a_stall() -> None:
    """Opus may change its packet length at any packet (RFC 7587; a browser's network adaptor goes
    20 -> 40 -> 60 ms). Each longer step of timestamp is not DTX: read as one, every packet paused
    the inbox, and after a stall had emptied it the stale-audio rule dropped each packet as it came
    (40 ms never filled a 60 ms cushion): silence for the rest of the session."""
    encoder = OpusEncoder()
    short = stream(10.0, 0.0, seq=100, timestamp=5_000, encoder=encoder)
    longer = stream(10.0, 10.0, seq=100 + len(short), timestamp=5_000 + len(short) * 960,
                    packet_ms=40, encoder=encoder)
    receiver, heard = await listen(stalled(short + longer, 12.0, 0.3), 20.0)
    before, after = beep_lags_ms(heard, 1.0, 10.0), beep_lags_ms(heard, 13.0, 20.0)
    assert (len(before), len(after)) == (9, 7), (receiver.buffer.stats, receiver.inbox.stats)
    assert float(np.median(after)) - float(np.median(before)) <= FRAME_S * 1000, (before, after)


def audio_codecs(sdp: str) -> list[str]:
    """The codecs of the audio m-line, in its order (the first is what the other side sends)."""
    formats = re.search(r"^m=audio \S+ \S+ ([\d ]+)\r?$", sdp, re.M)
    assert formats is not None, sdp
    names = dict(re.findall(r"^a=rtpmap:(\d+) ([\w-]+)/", sdp, re.M))
    return [names[pt].lower() for pt in formats.group(1).split()]


async def gateway_offer(audio: str) -> str:
    """An aiortc client's offer with PCMU first, as telephony gateways write theirs."""
    pc = new_peer_connection()
    transceiver = pc.addTransceiver(PcmTrack(SILENCE) if audio == "sendrecv" else "audio", direction=audio)
    capabilities = RTCRtpSender.getCapabilities("audio")
    assert capabilities is not None
    transceiver.setCodecPreferences(sorted(capabilities.codecs, key=lambda c: c.mimeType != "audio/PCMU"))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return str(pc.localDescription.sdp)


@pytest.mark.usefixtures("loopback")
@pytest.mark.parametrize("audio", ["sendrecv", "recvonly"])  # a session's offer, a viewer's
async def test_the_answer_lets_a_peer_send_and_receive_only_opus(audio: str) -> None:
    """A telephony gateway offers PCMU first; answered as offered, it sent PCMU, which the receive
    path decoded as Opus (the server heard nothing), and the server's Opus packets went out
    labelled PCMU."""
    offer = await gateway_offer(audio)
    assert audio_codecs(offer)[0] == "pcmu"
    pc = new_peer_connection()
    try:
        answer = await answer_offer(pc, offer, [], VP8)
    finally:
        await pc.close()
    assert audio_codecs(answer) == ["opus"]


async def test_receiver_reports_cover_the_stream_received_not_every_ssrc_seen() -> None:
    """aiortc sends one report block per SSRC in these statistics, its count in 5 bits: from the
    32nd stream restart on, its receiver reports were malformed (the count spilt into the padding
    and version bits), from the 256th building one raised, and the table only grew."""
    receiver = OpusReceiver(AudioInbox(), MediaClock(ManualClock()), ServerMetrics())
    for ssrc in range(1, 41):
        for sent in stream(0.1, 0.0, seq=ssrc * 1000, timestamp=ssrc * 10_000, ssrc=ssrc):
            await receiver._handle(sent.packet, 0)
    assert list(receiver._statistics) == [40]


async def test_a_lost_packet_is_rebuilt_as_at_most_the_longest_opus_packet() -> None:
    """The lost packet's length comes from the timestamps, which the peer writes: with steps of
    tens of seconds and a corrupt packet after the loss, the failed FEC decode handed out that
    much silence (2**31 ticks: 2.9 GB of float32, for the inbox to copy and drop)."""
    receiver = OpusReceiver(AudioInbox(), MediaClock(ManualClock()), ServerMetrics())
    corrupt, step = b"\xff\xff\xff", 30_000_000  # ticks: 625 s
    for seq in (0, 1, 3, 4):  # 2 is lost, 3 (its FEC) corrupt
        await receiver._handle(RtpPacket(payload_type=OPUS_PT, sequence_number=seq, timestamp=seq * step,
                                         ssrc=1, payload=corrupt), 0)
    receiver._play(receiver.buffer.release(float("inf")))
    handed_ms = receiver.inbox.depth_ms + receiver.inbox.stats.dropped_samples * 1000 / SAMPLE_RATE
    assert receiver.buffer.stats.fec == 1 and handed_ms <= 4 * MAX_PACKET_MS, handed_ms
