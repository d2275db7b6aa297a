"""The server's own receive path for a publisher's Opus: RTP packets -> 16 kHz audio in the inbox.

aiortc's audio receiver holds 4 packets before releasing any and, after a loss, stays deeper for
the rest of the session; it decodes to 48 kHz stereo that must be resampled. So the audio
receiver's packet handler is replaced: packets go to our `JitterBuffer` (no delay while nothing
is missing), are decoded by libopus at 16 kHz (FEC or PLC for a lost one), and go straight into
the `AudioInbox`. aiortc's jitter buffer and decoder never see an audio packet, but its RTCP
statistics still do, so the sender keeps getting receiver reports (loss drives its FEC).
"""

import asyncio
import dataclasses
import time

import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from lipstream.streaming.clock import MediaClock
from lipstream.streaming.inbox import AudioInbox
from lipstream.streaming.jitterbuffer import JitterBuffer, JitterConfig, JitterStats, Play, Playout
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.opus import OPUS_CLOCK_RATE, RTP_TICKS_PER_SAMPLE, OpusDecoder, packet_samples


def packet_ticks(payload: bytes) -> int:
    """How long one Opus packet lasts, in RTP ticks (0: not valid Opus)."""
    return packet_samples(payload) * RTP_TICKS_PER_SAMPLE


class OpusReceiver:
    """Owns one inbound audio stream from packet to inbox; `run()` wakes it for lost packets."""

    def __init__(self, inbox: AudioInbox, clock: MediaClock, metrics: ServerMetrics,
                 config: JitterConfig | None = None) -> None:
        self.inbox, self.clock, self.metrics = inbox, clock, metrics
        self.buffer = JitterBuffer(config, packet_ticks)
        self.decoder = OpusDecoder()
        self._arrived = asyncio.Event()  # set and replaced on every packet
        self._exported = JitterStats()
        self._statistics: dict[int, StreamStatistics] = {}

    def attach(self, receiver: RTCRtpReceiver) -> None:
        """Take the receiver's packets from now on (call before the first one arrives)."""
        receiver._handle_rtp_packet = self._handle  # type: ignore[method-assign]
        # aiortc's receiver reports read these per-SSRC statistics; keep feeding them.
        self._statistics = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})

    async def run(self) -> None:
        """Give up on missing packets when their wait is over, even if nothing else arrives."""
        while True:
            deadline = self.buffer.deadline()
            if deadline is None:
                await self._arrived.wait()
            else:
                await self.clock.wait_event(self._arrived, deadline)
                self._play(self.buffer.release(self.clock.now()))

    async def _handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        now = self.clock.now()
        self._count(packet)
        self._play(self.buffer.push(packet.sequence_number, packet.timestamp, packet.payload, now,
                                    self.inbox.reserve_ms, packet.ssrc))
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _count(self, packet: RtpPacket) -> None:
        """Feed the statistics of the stream received; a new SSRC's replace the old one's (aiortc
        reports on every SSRC in them, in a 5-bit count: from the 32nd its reports were malformed)."""
        statistics = self._statistics.get(packet.ssrc)
        if statistics is None:
            self._statistics.clear()
            statistics = self._statistics[packet.ssrc] = StreamStatistics(OPUS_CLOCK_RATE)
        statistics.add(packet)

    def _play(self, items: list[Playout]) -> None:
        start = time.perf_counter()
        for item in items:
            self._play_one(item)
        if items:
            self.metrics.stage_seconds.labels("audio_in").observe(time.perf_counter() - start)
        self._export()

    def _play_one(self, item: Playout) -> None:
        samples = item.ticks // RTP_TICKS_PER_SAMPLE
        if item.play is Play.RESUME:
            self.inbox.pause()
            return
        pcm: np.ndarray
        if item.play is Play.PACKET:
            pcm = self.decoder.decode(item.payload)
        elif item.play is Play.FEC:
            pcm = self.decoder.recover(item.payload, samples)
        else:
            pcm = self.decoder.conceal(samples)
        self.inbox.push(pcm)

    def _export(self) -> None:
        """Count what the jitter buffer did since last time, by outcome."""
        for field in dataclasses.fields(JitterStats):
            now, before = getattr(self.buffer.stats, field.name), getattr(self._exported, field.name)
            if now > before:
                self.metrics.input_packets.labels(field.name).inc(now - before)
        self._exported = dataclasses.replace(self.buffer.stats)

