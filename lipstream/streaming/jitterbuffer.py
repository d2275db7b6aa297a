"""A receive jitter buffer for audio RTP: puts packets in order, and decides when one is lost.

A packet that is next in sequence plays at once: the buffer adds no delay while nothing is
missing (the inbox's cushion absorbs timing jitter). When one is missing, the packets after it
wait for it at most `reorder_ms`, and no longer than the audio already played out lasts
(`reserve_ms`, given with each packet: waiting past it would make the listener wait too, for a
packet that is most likely lost); then it is given up (concealed: FEC from the next packet when
that one is here, else PLC) and everything held behind it plays at once, so a loss never leaves
the stream deeper than before. Late and duplicate packets are dropped. A gap longer than
`max_conceal_packets` (an outage) is skipped, not concealed: silence, not seconds of PLC.
A jump in timestamp with no gap in sequence is DTX (the sender was silent): not a loss. A jump
is measured against the last packet's own length, when `ticks_of` reads it from the payload: a
sender may lengthen its packets at any one (Opus may), and its longer steps are not DTX.
A new SSRC is a new stream (the sender restarted it): its numbers start anywhere, so what is held
of the old one plays out at once and the new one starts afresh.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

SEQ_MODULO = 1 << 16  # RTP sequence numbers are 16 bits
SEQ_HALF = SEQ_MODULO // 2
PLAYED_MEMORY = 64  # packets behind the playout point still told apart: duplicate or late
TIMESTAMP_MODULO = 1 << 32  # and timestamps 32


@dataclass(frozen=True)
class JitterConfig:
    reorder_ms: int = 40  # longest wait for a missing packet once a later one is here
    max_conceal_packets: int = 5  # a longer gap is an outage: resume without concealing it


class Play(Enum):
    PACKET = "packet"  # decode `payload`
    FEC = "fec"  # lost: rebuild it from the redundancy in `payload` (the next packet)
    PLC = "plc"  # lost, nothing to rebuild from: conceal
    RESUME = "resume"  # after DTX or an outage: a pause in the stream, not a loss


@dataclass(frozen=True)
class Playout:
    play: Play
    payload: bytes = b""
    ticks: int = 0  # RTP ticks this item covers (PLC, FEC) or the pause before it (RESUME)


@dataclass(frozen=True)
class _Held:
    timestamp: int
    payload: bytes
    arrival_s: float


@dataclass
class JitterStats:
    played: int = 0
    late: int = 0
    duplicates: int = 0
    fec: int = 0
    plc: int = 0
    skipped: int = 0  # packets of an outage, not concealed


class JitterBuffer:
    def __init__(self, config: JitterConfig | None = None,
                 ticks_of: Callable[[bytes], int] | None = None) -> None:
        self.config = config or JitterConfig()
        self._ticks_of = ticks_of or (lambda payload: 0)  # a packet's length in RTP ticks (0: unknown)
        self.stats = JitterStats()
        self._held: dict[int, _Held] = {}  # extended sequence number -> packet
        self._played: set[int] = set()  # the last PLAYED_MEMORY played, extended
        self._next: int | None = None  # extended sequence number to play next
        self._last_timestamp: int | None = None
        self._ticks = 0  # RTP ticks per packet: the last one's own, else the step from the one before
        self._wait_s = self.config.reorder_ms / 1000  # for a missing packet, set as a gap opens
        self._ssrc: int | None = None

    def push(self, seq: int, timestamp: int, payload: bytes, now_s: float,
             reserve_ms: float | None = None, ssrc: int | None = None) -> list[Playout]:
        """Add a packet as it arrives; returns what can play now, in order. `reserve_ms`: how
        long what was played out lasts (None: as long as any reordering here needs)."""
        out = self._new_stream(ssrc)
        if self._next is None:
            self._next = seq
        if not self._held:  # if this one opens a gap, its wait is what the listener can spare
            longest_ms = self.config.reorder_ms
            self._wait_s = max(min(longest_ms if reserve_ms is None else reserve_ms, longest_ms), 0.0) / 1000
        ext = self._extend(seq)
        if ext in self._held or ext in self._played:
            self.stats.duplicates += 1
        elif ext < self._next:  # given up on (concealed or skipped) before it came
            self.stats.late += 1
        else:
            self._held[ext] = _Held(timestamp, payload, now_s)
        return out + self.release(now_s)

    def deadline(self) -> float | None:
        """When the missing packet is given up, if one is missing (the caller wakes then)."""
        if not self._held or self._next in self._held:
            return None
        assert self._next is not None
        first_arrival_s = min(h.arrival_s for h in self._held.values())
        if min(self._held) - self._next > self.config.max_conceal_packets:
            return first_arrival_s  # no reordering is that deep: an outage, resume now
        return first_arrival_s + self._wait_s

    def release(self, now_s: float) -> list[Playout]:
        out: list[Playout] = []
        while self._held:
            assert self._next is not None
            if self._next in self._held:
                out += self._play(self._held.pop(self._next))
                self._played.add(self._next)
                self._played.discard(self._next - PLAYED_MEMORY)
            elif (deadline := self.deadline()) is not None and now_s >= deadline:
                out += self._give_up()
                continue
            else:
                break
            self._next += 1
        return out

    def _new_stream(self, ssrc: int | None) -> list[Playout]:
        """On a new SSRC: the old stream's held packets play out, and the new one starts afresh
        (its numbers compared with the old ones' would read as late, or duplicates, for minutes)."""
        if ssrc == self._ssrc:
            return []
        known, self._ssrc = self._ssrc is not None, ssrc
        if not known:
            return []
        out = self.release(float("inf"))  # no wait for the old stream's missing packets
        self._played.clear()
        self._next = self._last_timestamp = None
        return out + [Playout(Play.RESUME)]

    def _extend(self, seq: int) -> int:
        """A 16-bit sequence number -> the extended number nearest the one expected (wraps)."""
        assert self._next is not None
        return self._next + (seq - self._next + SEQ_HALF) % SEQ_MODULO - SEQ_HALF

    def _play(self, held: _Held) -> list[Playout]:
        out = []
        if self._last_timestamp is not None:
            step = (held.timestamp - self._last_timestamp) % TIMESTAMP_MODULO
            if self._ticks and self._ticks < step < TIMESTAMP_MODULO // 2:  # DTX: the sender skipped silence
                out.append(Playout(Play.RESUME, ticks=step - self._ticks))
            elif step:
                self._ticks = step
        self._last_timestamp = held.timestamp
        self._ticks = self._ticks_of(held.payload) or self._ticks
        self.stats.played += 1
        return out + [Playout(Play.PACKET, held.payload)]

    def _give_up(self) -> list[Playout]:
        """The next packet is lost: conceal it, or skip a whole outage."""
        assert self._next is not None
        first = min(self._held)
        if first - self._next > self.config.max_conceal_packets:
            self.stats.skipped += first - self._next
            self._next = first
            self._last_timestamp = None  # the pause is not DTX to measure: resume plainly
            return [Playout(Play.RESUME)]
        lost = self._next
        self._next += 1
        if self._last_timestamp is not None:
            self._last_timestamp += self._ticks
        following = self._held.get(lost + 1)
        if following is not None:
            self.stats.fec += 1
            return [Playout(Play.FEC, following.payload, self._ticks)]
        self.stats.plc += 1
        return [Playout(Play.PLC, ticks=self._ticks)]
