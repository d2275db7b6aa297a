"""The start-up estimate behind the default --max-sessions times the engine as sessions use it:
every timed step draws a new face, as speech makes it do. Over silence an idle face is the last
picture again (no render) except where the head's pose steps, and the estimate admitted 10
sessions on a 2-core machine where 6 were at the edge."""

from typing import Any

import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.engine import Engine
from lipstream.engine.render import Renderer
from lipstream.streaming.capacity import TIMED_FRAMES, estimate_capacity


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default()


def test_every_timed_step_draws_a_new_face(avatar: Avatar, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    draw = Renderer.draw

    def counted(self: Renderer, *args: Any) -> Any:
        drawn.append(args[-1])  # the frame index
        return draw(self, *args)

    monkeypatch.setattr(Renderer, "draw", counted)
    capacity = estimate_capacity(Engine(avatar), 2, "vp8")
    assert len(set(drawn)) >= TIMED_FRAMES, f"{len(set(drawn))} faces drawn: the engine was idle"
    assert capacity.engine_ms > 0 and capacity.max_sessions >= 1
