"""Misuse of the Python API refused where it happens, with one line that says the fix: not numpy's
or a thread's error later, far from the call that caused it."""

import numpy as np
import pytest

from lipstream import EngineConfig
from lipstream.errors import ConfigError


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_a_seed_no_generator_takes_is_refused_by_the_config(seed: object) -> None:
    """EngineConfig(seed=-1) was accepted, and numpy raised its own ValueError when the engine was built."""
    with pytest.raises(ConfigError, match=r"^EngineConfig seed .*: use a whole number from 0, e.g. 0$"):
        EngineConfig(seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 7, 2**80, np.int64(3)])
def test_every_whole_seed_from_0_is_taken(seed: int) -> None:
    assert EngineConfig(seed=seed).seed == seed
