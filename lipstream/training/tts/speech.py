"""What every speech engine hands back: `Speech`, 16 kHz mono float32 audio plus phones whose spans
tile the audio from 0 to its end, so each mel frame has exactly one phone; and the helpers that
build such phones from an engine's start or end times."""

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE

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
