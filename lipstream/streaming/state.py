"""What a running server holds: its config, sessions, shared pool, avatars and metrics."""

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from lipstream.streaming.avatars import Avatar, AvatarStore
from lipstream.streaming.clock import Clock
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.metrics import ServerMetrics
from lipstream.streaming.session import Session
from lipstream.streaming.worker import FrameEngine, RenderPool

ENDED_KEPT = 500  # end reasons remembered for GET /v1/sessions/{id}, oldest forgotten first


class AtCapacity(Exception):
    """Every session slot is taken (the route answers 503 with Retry-After)."""


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
    ended: dict[str, str] = field(default_factory=dict)  # session id -> end reason, oldest first
    _setting_up: int = 0  # slots held by sessions still being made (not yet in `sessions`)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a session slot while one is set up; raises AtCapacity when none is free.

        The body registers its session in `sessions` (which holds the slot from then on, until
        `forget`); whatever the body does, raises or is cancelled, this slot is given back.
        """
        if self.slots_in_use >= max(self.max_sessions, 1):
            raise AtCapacity
        self._setting_up += 1
        try:
            yield
        finally:
            self._setting_up -= 1

    @property
    def slots_in_use(self) -> int:
        """Sessions running plus sessions still being set up."""
        return len(self.sessions) + self._setting_up

    def forget(self, session: Session) -> None:
        """Where a session's end is recorded: it no longer holds a slot or answers to its id."""
        self.sessions.pop(session.id, None)
        self.ended[session.id] = session.end_reason or "unknown"
        if len(self.ended) > ENDED_KEPT:
            del self.ended[next(iter(self.ended))]
