"""lipstream: one face photo + a live speech stream -> a lip-synced talking face, in real time."""

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.engine import Engine, EngineConfig, Frame
from lipstream.errors import LipstreamError

__all__ = ["Avatar", "AvatarConfig", "Engine", "EngineConfig", "Frame", "LipstreamError"]
__version__ = "0.1.0"
