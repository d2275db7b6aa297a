"""EngineConfig: how one session's engine hears and draws. Its own module, so that the motion
stream (no renderer) and the engine (motion stream + renderer) share it without a cycle."""

import os
from dataclasses import dataclass, field

from lipstream.engine.constants import HOP_MS
from lipstream.engine.device import DEVICES
from lipstream.engine.ranges import at_least_problem, choice_problem, is_whole, refuse
from lipstream.engine.render import RenderConfig
from lipstream.engine.smoothing import SmoothingConfig


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
        """Refused here, not as numpy's own ValueError when the engine is built from it, or as a
        mouth drawn from NaN (a NaN closure gain)."""
        refuse([
            choice_problem(self.device, DEVICES, "EngineConfig device"),
            seed_problem(self.seed, "EngineConfig seed"),
            motion_problem(self.motion),
            lookahead_problem(self.lookahead_ms),
            at_least_problem(self.bilabial_closure, 0.0, "EngineConfig bilabial_closure",
                             f"a gain from 0 (0: off), e.g. {EngineConfig.bilabial_closure}"),
            part_problem(self.smoothing, SmoothingConfig, "smoothing"),
            part_problem(self.render, RenderConfig, "render"),
        ])


def seed_problem(seed: object, name: str = "--seed") -> str | None:
    """Why `seed` cannot seed blinks and head motion (None: it can), said of the option or field `name`.
    numpy's generators take whole numbers from 0, of any size; a bool is a slip, not a seed."""
    if not is_whole(seed) or seed < 0:
        return f"{name} {seed!r}: use a whole number from 0, e.g. {EngineConfig.seed}"
    return None


def motion_problem(motion: object) -> str | None:
    """A path is checked when the model is loaded (ModelError); here only what cannot be one."""
    if motion is None or isinstance(motion, (str, os.PathLike)):
        return None
    return f"EngineConfig motion {motion!r}: use None (the shipped model), 'baseline' or an .onnx path"


def lookahead_problem(lookahead_ms: object) -> str | None:
    """The model hears whole mel frames: a lookahead between two was cut down to the one before."""
    if lookahead_ms is None or (is_whole(lookahead_ms) and lookahead_ms >= 0 and lookahead_ms % HOP_MS == 0):
        return None
    return (f"EngineConfig lookahead_ms {lookahead_ms!r}: use a whole number of ms from 0 in steps of "
            f"{HOP_MS} (one mel frame), or None for the model's own")


def part_problem(part: object, kind: type, name: str) -> str | None:
    if isinstance(part, kind):
        return None
    return f"EngineConfig {name} {part!r}: use a {kind.__name__}, e.g. {kind.__name__}()"
