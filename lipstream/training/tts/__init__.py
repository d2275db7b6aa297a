"""Text-to-speech engines that report when each phone starts and ends.

`speech` holds the types every engine hands back, `closures` the stop-closure signal processing,
and each engine has its module: `festival` and `flite` (subprocesses), `espeak` (libespeak-ng
through ctypes), `piper` (the Piper neural voice). `engine(name)` picks one; the engine modules
import only `speech`, `closures` and `install`, never this package's top, so nothing is circular.
"""

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.closures import attach_stop_closures
from lipstream.training.tts.install import INSTALL_HINT, available
from lipstream.training.tts.speech import (
    ARPABET,
    IPA,
    NEUTRAL,
    SILENCE_LABEL,
    Phone,
    Prosody,
    Speech,
    Synthesizer,
    phones_from_ends,
    tile_phones,
    to_16k,
)

__all__ = [
    "ARPABET", "INSTALL_HINT", "IPA", "NEUTRAL", "SILENCE_LABEL", "Phone", "Prosody", "Speech", "Synthesizer",
    "attach_stop_closures", "available", "engine", "phones_from_ends", "tile_phones", "to_16k",
]


def engine(name: str) -> Synthesizer:
    """The synthesizer called `name` (festival, flite, espeak, piper); raises if it is not installed."""
    # Imported on demand: each engine pulls in its own (optional) dependencies.
    if name == "festival":
        from lipstream.training.tts.festival import Festival

        return Festival()
    if name == "flite":
        from lipstream.training.tts.flite import Flite

        return Flite()
    if name == "espeak":
        from lipstream.training.tts.espeak import Espeak

        return Espeak()
    if name == "piper":
        from lipstream.training.tts.piper import Piper

        return Piper()
    raise SpeechEngineError(f"unknown speech engine {name!r}: use festival, flite, espeak or piper")
