"""What a running server holds: its config, sessions, shared pool, avatars and metrics."""

from collections.abc import Callable
from dataclasses import dataclass, field

from lipstream.streaming.avatars import Avatar, AvatarStore
from lipstream.streaming.clock import Clock
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.session import Session
from lipstream.streaming.worker import FrameEngine, RenderPool

ENDED_KEPT = 500  # end reasons remembered for GET /v1/sessions/{id}, oldest forgotten first


@dataclass
class ServerState:
    config: ServeConfig
    token: str | None
    token_generated: bool
    pool: RenderPool
    metrics: ServerMetrics
    avatars: AvatarStore
    engine_factory: Callable[[Avatar], FrameEngine]
    clock: Clock
    max_sessions: int  # 0 until measured at start-up
    sessions: dict[str, Session] = field(default_factory=dict)
    pending: int = 0  # sessions admitted but still being set up
    ended: dict[str, str] = field(default_factory=dict)  # session id -> end reason, oldest first

    def admit(self) -> bool:
        """Reserve a slot for a new session; False when full."""
        if len(self.sessions) + self.pending >= max(self.max_sessions, 1):
            return False
        self.pending += 1
        return True

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.ended[session.id] = session.end_reason or "unknown"
        if len(self.ended) > ENDED_KEPT:
            del self.ended[next(iter(self.ended))]
