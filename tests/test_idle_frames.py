"""An idle face costs no render: a frame that would be the last one drawn again is that frame.

In silence the mouth settles at rest and the head holds between its pose steps, so most frames of
a listening avatar are identical to the one before; drawing them again (and converting them to
I420 again) was a third of a session's engine time in speech with pauses (issue 9, capacity).
"""

import numpy as np
import pytest

from lipstream.engine.avatar import Avatar
from lipstream.engine.render import SAME_CONTROLS_TOLERANCE, RenderConfig, Renderer
from tests.producing import drive
from tests.test_clock import StampingEngine
from tests.test_render import STILL

REST = np.zeros(5, np.float32)
TALK = np.array([0.6, 0.2, 0.0, 0.0, 0.0], np.float32)


@pytest.fixture(scope="module")
def astronaut() -> Avatar:
    return Avatar.default()


def unblinking(renderer: Renderer, count: int) -> list[int]:
    return [i for i in range(count) if renderer.blink_amount(i) == 0.0][:count]


def test_the_same_picture_is_not_drawn_twice(astronaut: Avatar) -> None:
    renderer = Renderer(astronaut, STILL)
    a, b, c = unblinking(renderer, 3)
    first = renderer.render(REST, a)
    assert renderer.render(REST + SAME_CONTROLS_TOLERANCE / 2, b) is first
    talking = renderer.render(TALK, c)
    assert talking is not first and not np.array_equal(talking, first)


def test_a_reused_frame_is_what_drawing_it_would_give(astronaut: Avatar) -> None:
    """Controls within the tolerance draw a picture at most one grey level away."""
    renderer = Renderer(astronaut, STILL)
    a, b = unblinking(renderer, 2)
    near = TALK + SAME_CONTROLS_TOLERANCE
    reused, drawn = renderer.render(TALK, a), renderer.draw(near, b)
    assert np.abs(reused.astype(np.int16) - drawn).max() <= 1


def test_head_motion_or_a_blink_makes_a_new_frame(astronaut: Avatar) -> None:
    moving = Renderer(astronaut, RenderConfig(head_rotation_deg=0.6, head_shift_px=1.5))
    poses = [moving.head_pose(i) for i in range(50)]
    step = next(i for i in range(1, 50) if poses[i] != poses[i - 1] and moving.blink_amount(i) == 0)
    before = moving.render(REST, step - 1)
    assert moving.render(REST, step) is not before
    still = Renderer(astronaut, STILL)
    blink = next(i for i in range(1, 500) if still.blink_amount(i) > 0.5)
    open_eyes = still.render(REST, blink - 10)
    assert still.render(REST, blink) is not open_eyes


class SameImageEngine(StampingEngine):
    """Every rendered frame shows the very same image object, as an idle Engine's do."""

    image = np.full((16, 16, 3), 7, np.uint8)

    def pop_frame(self, render: bool = True):  # type: ignore[no-untyped-def]
        frame = super().pop_frame(render)
        return None if frame is None else type(frame)(frame.index, self.image, frame.audio, render)


async def test_the_producer_converts_an_unchanged_picture_once() -> None:
    producer = await drive(SameImageEngine(), lambda p: p.counts["rendered"] >= 5)
    frames = [producer.ring.get(i) for i in range(5)]
    assert all(f is not None and f.yuv is frames[0].yuv for f in frames)  # type: ignore[union-attr]


class MostlyIdleEngine(SameImageEngine):
    """Draws a new picture (taking `cost_s`) every 10th frame; in between repeats it for free."""

    def __init__(self, cost_s: float) -> None:
        super().__init__()
        self.cost_s, self.elapsed_s = cost_s, 0.0

    def now(self) -> float:
        return self.elapsed_s

    def pop_frame(self, render: bool = True):  # type: ignore[no-untyped-def]
        frame = super().pop_frame(render)
        if frame is not None and render and frame.index % 10 == 0:
            self.image = np.full((16, 16, 3), frame.index % 256, np.uint8)
            self.elapsed_s += self.cost_s
            frame = type(frame)(frame.index, self.image, frame.audio, render)
        return frame


async def test_repeats_of_an_idle_face_do_not_teach_the_producer_that_renders_are_free() -> None:
    """Its lead must still cover a real render when speech starts again."""
    engine = MostlyIdleEngine(cost_s=0.020)
    producer = await drive(engine, lambda p: p.counts["rendered"] >= 60, timer=engine.now)
    pacer = producer.pacer
    assert pacer.render_estimate_s == pytest.approx(0.020, abs=1e-3)
    assert pacer.lead_s() >= 0.020
