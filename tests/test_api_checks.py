"""Misuse of the Python API refused where it happens, with one line that says the fix: not numpy's
or a thread's error later, far from the call that caused it."""

import gc
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipstream import (
    SAMPLE_RATE,
    SAMPLES_PER_VIDEO_FRAME,
    AsyncEngine,
    Avatar,
    AvatarConfig,
    Engine,
    EngineConfig,
    RenderConfig,
)
from lipstream.engine.smoothing import SmoothingConfig
from lipstream.errors import ConfigError


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_a_seed_no_generator_takes_is_refused_by_the_config(seed: object) -> None:
    """EngineConfig(seed=-1) was accepted, and numpy raised its own ValueError when the engine was built."""
    with pytest.raises(ConfigError, match=r"^EngineConfig seed .*: use a whole number from 0, e.g. 0$"):
        EngineConfig(seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 7, 2**80, np.int64(3)])
def test_every_whole_seed_from_0_is_taken(seed: int) -> None:
    assert EngineConfig(seed=seed).seed == seed


NAN = math.nan


@pytest.mark.parametrize(("field", "value", "use"), [
    ("device", "gpu", "use one of auto, cpu, cuda"),
    ("motion", 3, r"use None \(the shipped model\), 'baseline' or an .onnx path"),
    ("lookahead_ms", -40, "use a whole number of ms from 0 in steps of 10"),
    ("lookahead_ms", 45, "use a whole number of ms from 0 in steps of 10"),
    ("lookahead_ms", 40.0, "use a whole number of ms from 0 in steps of 10"),
    ("bilabial_closure", NAN, r"use a gain from 0 \(0: off\), e.g. 2.0"),
    ("bilabial_closure", -1.0, "use a gain from 0"),
    ("smoothing", None, "use a SmoothingConfig"),
])
def test_an_engine_setting_out_of_range_is_refused_by_the_config(field: str, value: object, use: str) -> None:
    """Each was accepted: a negative lookahead was numpy's "negative dimensions are not allowed" when
    the engine was built, 45 ms quietly became 40, a NaN closure gain made NaN mouth controls."""
    with pytest.raises(ConfigError, match=rf"^EngineConfig {field} {escaped(value)}: {use}"):
        EngineConfig(**{field: value})


@pytest.mark.parametrize(("field", "value", "use"), [
    ("blink_interval_s", (0.0, 0.0), r"use \(shortest, longest\) seconds from 0.5, e.g. \(2.0, 6.0\)"),
    ("blink_interval_s", (6.0, 2.0), r"use \(shortest, longest\) seconds from 0.5"),
    ("blink_ms", (NAN, 200.0), r"use \(shortest, longest\) milliseconds from 0"),
    ("head_rotation_deg", NAN, r"use degrees from 0 \(0: still\), e.g. 0.6"),
    ("head_shift_px", -1.5, r"use pixels from 0 \(0: still\), e.g. 1.5"),
    ("device", "gpu", "use one of cpu, reference, cuda"),
])
def test_a_drawing_setting_out_of_range_is_refused_by_the_config(field: str, value: object, use: str) -> None:
    """Each was accepted, then numpy's or Python's error when the engine was built ("high - low < 0",
    "cannot convert float NaN to integer")."""
    with pytest.raises(ConfigError, match=rf"^RenderConfig {field} {escaped(value)}: {use}"):
        RenderConfig(**{field: value})


@pytest.mark.parametrize("value", [(NAN,) * 5, (-1.0,) * 5, (25.0, 40.0), 30.0])
@pytest.mark.parametrize("field", ["attack_ms", "release_ms"])
def test_a_smoothing_time_out_of_range_is_refused_by_the_config(field: str, value: object) -> None:
    """A NaN made every control NaN from then on; the wrong count was a bare assert in the smoother."""
    with pytest.raises(ConfigError, match=rf"^SmoothingConfig {field} {escaped(value)}: use 5 times in ms "
                                          r"from 0, one per control \(jaw_open, "):
        SmoothingConfig(**{field: value})


@pytest.mark.parametrize("settings", [
    dict(lookahead_ms=0), dict(lookahead_ms=120), dict(bilabial_closure=0),
    dict(bilabial_closure=np.float32(5)), dict(motion=Path("model.onnx")), dict(device="auto"),
    dict(render=RenderConfig(blink_interval_s=(0.5, 0.5), blink_ms=(0, 0), head_rotation_deg=0,
                             head_shift_px=np.float64(3), device="reference")),
    dict(smoothing=SmoothingConfig(attack_ms=(0,) * 5, release_ms=[1e4] * 5)),
], ids=str)
def test_settings_at_the_edges_of_their_ranges_are_taken(settings: dict[str, Any]) -> None:
    config = EngineConfig(**settings)
    assert all(getattr(config, name) == value for name, value in settings.items())


def escaped(value: object) -> str:
    """`value` as the message shows it, as a pattern."""
    return re.escape(repr(value))


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return Avatar.default(AvatarConfig(size=128))


async def test_a_second_async_engine_around_one_engine_waits_for_the_first_to_close(avatar: Avatar) -> None:
    """An Engine takes one caller at a time: two AsyncEngines each serialise only their own calls, so
    around one Engine they ran it from two threads at once. Refused, until the first is closed."""
    core = Engine(avatar)
    first = AsyncEngine(core, paced=False)
    with pytest.raises(ConfigError, match=r"^this Engine is already in an AsyncEngine: close\(\) that one"):
        AsyncEngine(core)
    AsyncEngine(Engine(avatar))  # another Engine is another matter
    await first.push_audio(np.zeros(SAMPLES_PER_VIDEO_FRAME * 2, np.float32), SAMPLE_RATE)
    await first.close()
    assert [frame.index async for frame in first] == [0, 1]
    second = AsyncEngine(core, paced=False)  # the Engine is handed on, and goes on where it was
    await second.push_audio(np.zeros(SAMPLES_PER_VIDEO_FRAME, np.float32), SAMPLE_RATE)
    await second.close()
    after = [frame.index async for frame in second]
    assert after[0] == 2 and after == list(range(2, 2 + len(after)))


def test_an_async_engine_dropped_unclosed_lets_its_engine_go(avatar: Avatar) -> None:
    core = Engine(avatar)
    AsyncEngine(core)  # never closed, and gone
    gc.collect()
    assert AsyncEngine(core).engine is core
