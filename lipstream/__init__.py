"""lipstream: one face photo + a live speech stream -> a lip-synced talking face, in real time."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that `import lipstream.errors` stays light.
_PUBLIC = {
    "Avatar": "lipstream.engine.avatar",
    "AvatarConfig": "lipstream.engine.avatar",
    "Engine": "lipstream.engine.engine",
    "EngineConfig": "lipstream.engine.engine",
    "Frame": "lipstream.engine.engine",
    "LipstreamError": "lipstream.errors",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lipstream' has no attribute {name!r}")
