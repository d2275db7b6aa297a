"""What the numbers of a config may be, each rule saying in one line what to use instead.

The configs (`EngineConfig`, `RenderConfig`, `SmoothingConfig`) check their fields when they are
made, so a NaN or a negative time is refused at the call that gave it, not met later as numpy's
error, a blink schedule that never moves on, or a mouth drawn from NaN controls.
"""

import math
from collections.abc import Sequence
from typing import TypeGuard

import numpy as np

from lipstream.errors import ConfigError


def is_real(value: object) -> bool:
    """A finite real number. A bool is a slip, not a number; NaN and infinity draw nothing."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_whole(value: object) -> TypeGuard[int]:
    """A whole number (numpy's too). A bool is a slip, not a number."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def choice_problem(value: object, choices: Sequence[str], name: str) -> str | None:
    """Why `value` is none of `choices` (None: it is one), said of the field `name`."""
    return None if value in choices else f"{name} {value!r}: use one of {', '.join(choices)}"


def at_least_problem(value: object, least: float, name: str, use: str) -> str | None:
    """Why `value` is not a real number >= `least` (None: it is), said of the field `name`."""
    if is_real(value) and value >= least:  # type: ignore[operator]  # is_real checked the type
        return None
    return f"{name} {value!r}: use {use}"


def span_problem(value: object, least: float, name: str, use: str) -> str | None:
    """Why `value` is not a (low, high) pair of real numbers with least <= low <= high."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(is_real, value)) \
            and least <= value[0] <= value[1]:
        return None
    return f"{name} {value!r}: use {use}"


def each_problem(value: object, count: int, least: float, name: str, use: str) -> str | None:
    """Why `value` is not `count` real numbers, each >= `least`."""
    if isinstance(value, (tuple, list)) and len(value) == count and all(map(is_real, value)) \
            and min(value, default=least) >= least:
        return None
    return f"{name} {value!r}: use {use}"


def refuse(problems: Sequence[str | None]) -> None:
    """ConfigError with the first problem, if any."""
    if (problem := next((p for p in problems if p is not None), None)) is not None:
        raise ConfigError(problem)
