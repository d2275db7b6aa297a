"""espeak-ng through libespeak-ng (ctypes): many languages, IPA phone events with sample positions.

The library and its data come from the `espeakng-loader` wheel. The library keeps global state
(one voice, one callback), so one `Espeak` per process is enough; calls are serialised by a lock.
"""

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.closures import attach_stop_closures
from lipstream.training.tts.espeak_state import StateReset
from lipstream.training.tts.install import INSTALL_HINT
from lipstream.training.tts.speech import IPA, NEUTRAL, Prosody, Speech, tile_phones, to_16k

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS, INITIALIZE_PHONEME_IPA = 0x1, 0x2
CHARS_UTF8, POS_CHARACTER = 1, 1
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH = 1, 3  # espeak_PARAMETER values
DEFAULT_RATE_WPM, DEFAULT_PITCH = 175, 50

# A spread of espeak-ng's voice variants (male, female, breathy, whispery-free ones) per language.
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT in speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Library:
    """The loaded, initialised libespeak-ng and the buffers its callback fills."""

    _instance: "_Library | None" = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise SpeechEngineError(f"espeak-ng library not found: install {INSTALL_HINT['espeak']}") from exc
        library_path = espeakng_loader.get_library_path()
        self.lib: Any = ctypes.CDLL(library_path)
        self.reset_state = StateReset(self.lib, Path(library_path))
        data = espeakng_loader.get_data_path().encode()
        self.rate_hz = self.lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data, INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA
        )
        if self.rate_hz <= 0:
            raise SpeechEngineError("espeak-ng failed to initialise: reinstall espeakng-loader")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive: the library holds a raw pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> "_Library":
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = _Library()
            return cls._instance

    def _on_audio(self, wav: Any, n_samples: int, events: Any) -> int:
        if n_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                # id.string holds up to 8 bytes of IPA, NUL-terminated when shorter.
                label = bytes(events[i].id.string).split(b"\0")[0].decode("utf-8", "replace")
                self.events.append((events[i].sample, label))
            i += 1
        return 0


class Espeak:
    name = "espeak"
    phoneset = IPA

    def __init__(self) -> None:
        self._lib = _Library.get()

    def voices(self) -> tuple[str, ...]:
        return VARIANTS

    def synthesize(self, voice: str, text: str, language: str = "en", prosody: Prosody = NEUTRAL) -> Speech:
        """`voice`: a variant suffix ("", "+m1", "+f2"); `language`: an espeak-ng voice ("en-us", "de")."""
        lib = self._lib
        with lib.lock:
            lib.chunks.clear()
            lib.events.clear()
            lib.reset_state()  # the same text gives the same audio, whatever was said before
            if lib.lib.espeak_SetVoiceByName(f"{language}{voice}".encode()) != 0:
                raise SpeechEngineError(f"espeak-ng has no voice {language}{voice}: pick another language")
            lib.lib.espeak_SetParameter(PARAM_RATE, round(DEFAULT_RATE_WPM * prosody.tempo), 0)
            lib.lib.espeak_SetParameter(PARAM_PITCH, min(99, round(DEFAULT_PITCH * prosody.pitch)), 0)
            data = text.encode("utf-8") + b"\0"
            status = lib.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if status != 0:
                raise SpeechEngineError(f"espeak-ng failed (status {status}) on {text[:40]!r}")
            pcm = np.concatenate(lib.chunks) if lib.chunks else np.zeros(0, np.int16)
            events = list(lib.events)
        audio = to_16k(pcm.astype(np.float32) / 32768.0, lib.rate_hz)
        # "(en)" / "(ru)" mark a switch of language inside the text, not a sound.
        events = [(sample, label) for sample, label in events if not label.startswith("(")]
        labels = [label for _, label in events]
        starts = [sample / lib.rate_hz for sample, _ in events]
        return attach_stop_closures(Speech(audio, tile_phones(labels, starts, audio.size / 16000, IPA), IPA))
