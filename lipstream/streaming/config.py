"""What `lipstream serve` is configured with: one frozen dataclass per concern, defaults written once.

Its own module, so that the server, its routes and its state all import it without a cycle.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from lipstream.engine.config import EngineConfig
from lipstream.streaming.avatars import Avatar, UploadLimits
from lipstream.streaming.encoders import CLI_VIDEO_CODEC
from lipstream.streaming.session import SessionConfig
from lipstream.streaming.worker import FrameEngine

EngineFactory = Callable[[Avatar], FrameEngine]


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    face: str | None = None  # None: the bundled default avatar
    max_sessions: int | None = None  # None: measured at start-up (see capacity.py)
    token: str | None = None  # None on loopback: no auth; elsewhere one is generated
    max_sdp_bytes: int = 64 * 1024  # real offers are 2-8 KB
    retry_after_s: int = 10  # told to clients refused for capacity
    workers: int | None = None  # render threads; None: one per core
    # Server processes (--workers): None: one per core; 1: everything in this process (no front).
    worker_processes: int | None = None
    capacity_cores: int | None = None  # cores the start-up capacity estimate counts; None: all
    loopback_ice: bool | None = None  # offer 127.0.0.1 candidates; None: when host is loopback
    # A request body (offer, photo) must arrive within body_timeout_s plus its size at
    # min_body_bytes_per_s, else 408 (bodies.py): a 1 byte/s dribble is refused after 10 s.
    body_timeout_s: float = 10.0
    min_body_bytes_per_s: int = 64 * 1024  # 512 kbit/s
    shutdown_timeout_s: float = 2.0  # on SIGTERM, requests still running are cancelled after this
    uploads: UploadLimits = field(default_factory=UploadLimits)
    session: SessionConfig = field(default_factory=SessionConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)  # every session's engine, incl. device
    # Gather window (ms) batching sessions' model calls into one (engine/batching.py): None: the
    # device's default (DEFAULT_GPU_BATCH_WINDOW_MS on a GPU, off on the CPU); 0: off.
    batch_window_ms: float | None = None
    video_codec: str = CLI_VIDEO_CODEC  # "auto", "vp8" or "h264": what senders prefer (encoders.py)
