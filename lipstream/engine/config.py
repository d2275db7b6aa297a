"""EngineConfig: how one session's engine hears and draws. Its own module, so that the motion
stream (no renderer) and the engine (motion stream + renderer) share it without a cycle."""

from dataclasses import dataclass, field

import numpy as np

from lipstream.engine.render import RenderConfig
from lipstream.engine.smoothing import SmoothingConfig
from lipstream.errors import ConfigError


@dataclass(frozen=True)
class EngineConfig:
    device: str = "cpu"  # "cpu", "cuda" or "auto" (a GPU when usable): see device.py
    seed: int = 0  # drives blinks and head motion: same seed, same inputs -> same frames
    motion: str | None = None  # None: the shipped model; "baseline"; or a path to an .onnx
    lookahead_ms: int | None = None  # the baseline's lookahead; a trained model brings its own
    bilabial_closure: float = 2.0  # gain on the viseme head's /p b m/ belief closing the lips (0: off)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    render: RenderConfig = field(default_factory=RenderConfig)

    def __post_init__(self) -> None:
        """Refused here, not as numpy's own ValueError when the engine is built from it."""
        if (problem := seed_problem(self.seed, "EngineConfig seed")) is not None:
            raise ConfigError(problem)


def seed_problem(seed: object, name: str = "--seed") -> str | None:
    """Why `seed` cannot seed blinks and head motion (None: it can), said of the option or field `name`.
    numpy's generators take whole numbers from 0, of any size; a bool is a slip, not a seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        return f"{name} {seed!r}: use a whole number from 0, e.g. {EngineConfig.seed}"
    return None
