"""EngineConfig: how one session's engine hears and draws. Its own module, so that the motion
stream (no renderer) and the engine (motion stream + renderer) share it without a cycle."""

from dataclasses import dataclass, field

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
