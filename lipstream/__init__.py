"""lipstream: one face photo + a live speech stream -> a lip-synced talking face, in real time.

Public names are imported on first use, so that `import lipstream.errors` stays light; type
checkers see the real classes (this package ships `py.typed`).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Avatar": "lipstream.engine.avatar",
    "AvatarConfig": "lipstream.engine.avatar",
    "Engine": "lipstream.engine.engine",
    "EngineConfig": "lipstream.engine.config",
    "Frame": "lipstream.engine.engine",
    "AsyncEngine": "lipstream.streaming.asyncengine",
    "PacingConfig": "lipstream.streaming.pacing",
    "RenderConfig": "lipstream.engine.render",
    "MotionStream": "lipstream.engine.stream",
    "MotionFrame": "lipstream.engine.stream",
    "CONTROL_NAMES": "lipstream.engine.controls",
    "VISEMES": "lipstream.engine.controls",
    "ARKIT_BLENDSHAPES": "lipstream.engine.controls",
    "SAMPLE_RATE": "lipstream.engine.constants",
    "VIDEO_FPS": "lipstream.engine.constants",
    "SAMPLES_PER_VIDEO_FRAME": "lipstream.engine.constants",
    "LipstreamError": "lipstream.errors",
    "AudioError": "lipstream.errors",
    "ConfigError": "lipstream.errors",
    "PhotoError": "lipstream.errors",
    "ModelError": "lipstream.errors",
    "DeviceError": "lipstream.errors",
    "GpuError": "lipstream.errors",
}
__all__ = [  # written out, not list(_PUBLIC): linters and type checkers read it literally
    "ARKIT_BLENDSHAPES", "CONTROL_NAMES", "SAMPLES_PER_VIDEO_FRAME", "SAMPLE_RATE", "VIDEO_FPS", "VISEMES",
    "AsyncEngine", "AudioError", "Avatar", "AvatarConfig", "ConfigError", "DeviceError", "Engine",
    "EngineConfig", "Frame", "GpuError", "LipstreamError", "ModelError", "MotionFrame", "MotionStream",
    "PacingConfig", "PhotoError", "RenderConfig",
]

if TYPE_CHECKING:
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.config import EngineConfig
    from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME, VIDEO_FPS
    from lipstream.engine.controls import ARKIT_BLENDSHAPES, CONTROL_NAMES, VISEMES
    from lipstream.engine.engine import Engine, Frame
    from lipstream.engine.render import RenderConfig
    from lipstream.engine.stream import MotionFrame, MotionStream
    from lipstream.errors import (
        AudioError,
        ConfigError,
        DeviceError,
        GpuError,
        LipstreamError,
        ModelError,
        PhotoError,
    )
    from lipstream.streaming.asyncengine import AsyncEngine
    from lipstream.streaming.pacing import PacingConfig
else:
    def __getattr__(name: str) -> Any:
        if name in _PUBLIC:
            return getattr(import_module(_PUBLIC[name]), name)
        raise AttributeError(f"module 'lipstream' has no attribute {name!r}")
