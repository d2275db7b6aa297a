"""Misuse of the Python API refused where it happens, with one line that says the fix: not numpy's
or a thread's error later, far from the call that caused it."""

import gc

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
)
from lipstream.errors import ConfigError


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_a_seed_no_generator_takes_is_refused_by_the_config(seed: object) -> None:
    """EngineConfig(seed=-1) was accepted, and numpy raised its own ValueError when the engine was built."""
    with pytest.raises(ConfigError, match=r"^EngineConfig seed .*: use a whole number from 0, e.g. 0$"):
        EngineConfig(seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 7, 2**80, np.int64(3)])
def test_every_whole_seed_from_0_is_taken(seed: int) -> None:
    assert EngineConfig(seed=seed).seed == seed


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
