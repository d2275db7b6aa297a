"""Prometheus metrics of one server: what an operator needs to see that sessions stay live.

Each app gets its own registry, so two servers in one process (tests) never share counters.
"""

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.streaming.inbox import InboxStats

__all__ = ["PROMETHEUS_CONTENT_TYPE", "ServerMetrics"]

# Stage latencies live between ~0.1 ms (resampling a packet) and ~100 ms (a render on a busy core).
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)
# Audio-video offset at the hand-off to the encoders: 0 when both leave together.
# How much inbound audio waits in the inbox when a frame takes it: ~40-80 ms when healthy.
DEPTH_BUCKETS_S = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.24)
# Motion model calls batched across sessions (engine/batching.py): 1 up to DEFAULT_MAX_BATCH (64).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
OFFSET_BUCKETS_S = (-0.08, -0.04, -0.02, -0.01, -0.005, 0.0, 0.005, 0.01, 0.02, 0.04, 0.08)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("lipstream_sessions", "Sessions running now", registry=r)
        self.viewers = Gauge("lipstream_viewers", "Viewer connections running now", registry=r)
        self.sessions_started = Counter(
            "lipstream_sessions_started", "Sessions created", registry=r
        )
        self.sessions_ended = Counter(
            "lipstream_sessions_ended", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.sessions_rejected = Counter(
            "lipstream_sessions_rejected", "Session requests refused for capacity", registry=r
        )
        self.frames = Counter(
            "lipstream_frames",
            "Video frames made: rendered; skipped (image repeated because the session was behind); "
            "late (not ready when due, previous image sent)",
            ["result"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "lipstream_stage_seconds",
            "Time per pipeline stage: audio_in (jitter buffer + Opus decode per packet), queue (wait for a "
            "render worker), engine (motion+render per frame), ready_margin (frame ready before due)",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.av_offset_seconds = Histogram(
            "lipstream_av_offset_seconds",
            "Video hand-off time minus the hand-off time of the audio made with it",
            buckets=OFFSET_BUCKETS_S,
            registry=r,
        )
        self.input_underruns = Counter(
            "lipstream_input_underruns",
            "Times inbound speech ran dry and then came late (a sender's pause, DTX, is not one)",
            registry=r
        )
        self.input_dropped_seconds = Counter(
            "lipstream_input_dropped_seconds", "Inbound audio dropped to cap latency", registry=r
        )
        self.input_padded_seconds = Counter(
            "lipstream_input_padded_seconds",
            "Silence put back in quiet moments when inbound audio stayed short of its cushion (a "
            "sender whose clock runs slow)", registry=r
        )

        self.input_depth_seconds = Histogram(
            "lipstream_input_depth_seconds",
            "Inbound audio held in the inbox after each frame took its share",
            buckets=DEPTH_BUCKETS_S,
            registry=r,
        )
        self.input_packets = Counter(
            "lipstream_input_packets",
            "Inbound audio packets by outcome: played, late, duplicates (dropped), fec (a lost one "
            "rebuilt from the next), plc (a lost one concealed), skipped (an outage, not concealed)",
            ["result"],
            registry=r,
        )
        self.producer_lead_seconds = Histogram(
            "lipstream_producer_lead_seconds",
            "How long before its due time each frame was started",
            buckets=STAGE_BUCKETS_S,
            registry=r,
        )
        self.control_messages_dropped = Counter(
            "lipstream_control_messages_dropped",
            "Control stream messages not sent because the peer had not acknowledged the earlier "
            "ones (a peer that stopped reading)", registry=r
        )
        self.model_batch_size = Histogram(
            "lipstream_model_batch_size",
            "Sessions' frames per motion model call, when calls are batched (--batch-window-ms)",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )

    def count_inbox(self, now: InboxStats, before: InboxStats) -> None:
        """A session inbox's counts since `before` (an earlier copy of its stats)."""
        self.input_underruns.inc(now.underruns - before.underruns)
        self.input_dropped_seconds.inc((now.dropped_samples - before.dropped_samples) / SAMPLE_RATE)
        self.input_padded_seconds.inc((now.padded_samples - before.padded_samples) / SAMPLE_RATE)

    def render(self) -> bytes:
        return generate_latest(self.registry)
