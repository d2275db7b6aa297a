"""Phone-labelled training speech, synthesised on the fly from four TTS engines.

`synthesize` gives one clean utterance; `utterances(split, seed)` an endless, seed-determined
stream over a split's voices with random offline text and (by default) microphone/WebRTC
augmentation. Each `Utterance` carries per-mel-frame visemes and control targets (see `targets`).

Held-out split (never seen in training; used to measure generalisation to new voices/languages):
- Piper `joe` (en-us): the only natural-sounding neural voice, so held-out numbers reflect real speech;
- Festival `cmu_us_slt_arctic_hts` and flite `slt` (the same US female speaker in two engines);
- espeak-ng variants +m3 and +f4 in every language, and the languages Swedish (sv) and Hindi (hi)
  with every variant.
Training keeps English from Festival kal/ked, flite kal/kal16/awb/rms and espeak-ng en-us/en (British)
(other variants), plus espeak-ng in 17 more languages.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np

from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.errors import SpeechEngineError
from lipstream.training import text as text_source
from lipstream.training.augment import DEFAULT_AUGMENT, AugmentConfig, augment_speech
from lipstream.training.targets import control_targets, frame_visemes
from lipstream.training.tts import (
    ARPABET,
    INSTALL_HINT,
    IPA,
    NEUTRAL,
    Phone,
    Prosody,
    Synthesizer,
    available,
    engine,
)
from lipstream.training.tts.festival import Festival, festival_voices

__all__ = ["Phone", "Utterance", "VoiceSpec", "augment", "synthesize", "utterances", "voices"]

SYNTHESIZERS = ("festival", "flite", "espeak", "piper")
RECORDED = "recorded"  # human speech aligned by pocketsphinx (`recorded_set`): scored, never trained on
PROMPTS = "prompts"  # other human speech aligned by pocketsphinx (`prompts`): trained on with --prompts
PHONESET = {"festival": ARPABET, "flite": ARPABET, "espeak": IPA, "piper": IPA, RECORDED: ARPABET,
            PROMPTS: ARPABET}
SPLITS = ("train", "heldout")
MIN_UTTERANCE_SAMPLES = SAMPLE_RATE // 5  # shorter draws (a lone word that failed) are skipped
FESTIVAL_BATCH = 8  # utterances per Festival process
MAX_DRAWS = 200  # failed draws in a row before a stream gives up

# fmt: off
ESPEAK_TRAIN_LANGUAGES = (
    "en-us", "en", "de", "fr", "es", "it", "pt-br", "nl", "pl", "ru", "cs", "fi", "hu", "tr", "ro", "da",
    "el", "id", "vi",
)
# fmt: on
ESPEAK_HELDOUT_LANGUAGES = ("sv", "hi")
ESPEAK_TRAIN_VARIANTS = ("", "+m1", "+m2", "+m4", "+m5", "+m7", "+f1", "+f2", "+f3", "+f5")
ESPEAK_HELDOUT_VARIANTS = ("+m3", "+f4")
FESTIVAL_SPLIT = {"kal_diphone": "train", "ked_diphone": "train", "cmu_us_slt_arctic_hts": "heldout"}
FLITE_SPLIT = {"kal": "train", "kal16": "train", "awb": "train", "rms": "train", "slt": "heldout"}
# How often each engine is drawn (espeak has hundreds of voices; this keeps the mix balanced).
ENGINE_WEIGHTS = {
    "train": {"espeak": 0.5, "flite": 0.3, "festival": 0.2},
    "heldout": {"piper": 0.4, "espeak": 0.3, "flite": 0.15, "festival": 0.15},
}


@dataclass(frozen=True)
class VoiceSpec:
    engine: str
    voice: str
    language: str


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # (n,) float32, 16 kHz mono (augmented if augmentation was applied)
    phones: tuple[Phone, ...]
    visemes: np.ndarray  # (T,) int64 viseme index per mel frame, T = n // HOP_SAMPLES
    controls: np.ndarray  # (T, N_CONTROLS) float32 control targets per mel frame
    engine: str
    voice: str
    language: str
    text: str


def label(
    audio: np.ndarray, phones: tuple[Phone, ...], engine_name: str, voice: str, language: str, text: str
) -> Utterance:
    """An Utterance with its frame labels derived from the phones."""
    n_frames = audio.size // HOP_SAMPLES
    phoneset = PHONESET[engine_name]
    return Utterance(
        audio=audio.astype(np.float32),
        phones=phones,
        visemes=frame_visemes(phones, phoneset, n_frames),
        controls=control_targets(phones, phoneset, n_frames),
        engine=engine_name,
        voice=voice,
        language=language,
        text=text,
    )


@cache
def _engine(name: str) -> Synthesizer:
    return engine(name)


def synthesize(engine: str, voice: str, text: str, language: str = "en") -> Utterance:
    """One clean utterance from `engine` (festival, flite, espeak, piper); no augmentation."""
    return synthesize_with(_engine(engine), voice, text, language)


def synthesize_with(
    synth: Synthesizer, voice: str, text: str, language: str, prosody: Prosody = NEUTRAL
) -> Utterance:
    speech = synth.synthesize(voice, text, language, prosody)
    return label(speech.audio, speech.phones, synth.name, voice, language, text)


def _engine_voices(name: str) -> list[VoiceSpec]:
    """Every VoiceSpec of one engine, both splits."""
    if name == "festival":
        return [VoiceSpec("festival", v, "en") for v in FESTIVAL_SPLIT]
    if name == "flite":
        return [VoiceSpec("flite", v, "en") for v in FLITE_SPLIT]
    if name == "piper":
        return [VoiceSpec("piper", "joe", "en-us")]
    languages = ESPEAK_TRAIN_LANGUAGES + ESPEAK_HELDOUT_LANGUAGES
    variants = ESPEAK_TRAIN_VARIANTS + ESPEAK_HELDOUT_VARIANTS
    return [VoiceSpec("espeak", v, lang) for lang in languages for v in variants]


def split_of(spec: VoiceSpec) -> str:
    if spec.engine == "piper":
        return "heldout"
    if spec.engine == "festival":
        return FESTIVAL_SPLIT[spec.voice]
    if spec.engine == "flite":
        return FLITE_SPLIT[spec.voice]
    heldout = spec.voice in ESPEAK_HELDOUT_VARIANTS or spec.language in ESPEAK_HELDOUT_LANGUAGES
    return "heldout" if heldout else "train"


def voices(split: str = "train") -> list[VoiceSpec]:
    """The voices of a split ("train" or "heldout"), whether or not their engine is installed here."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'heldout'")
    return [s for name in SYNTHESIZERS for s in _engine_voices(name) if split_of(s) == split]


def augment(u: Utterance, rng: np.random.Generator, cfg: AugmentConfig = DEFAULT_AUGMENT) -> Utterance:
    """Microphone/room/WebRTC augmentation; labels are re-derived from the (rescaled) phones."""
    audio, phones = augment_speech(u.audio, u.phones, PHONESET[u.engine], rng, cfg)
    return label(audio, phones, u.engine, u.voice, u.language, u.text)


_augment = augment  # `utterances` takes a flag of the same name


def utterances(split: str, seed: int, augment: bool = True,
               cfg: AugmentConfig = DEFAULT_AUGMENT) -> Iterator[Utterance]:
    """Endless utterances from the split's voices; the same seed gives the same stream."""
    sampler = _Sampler(split, np.random.default_rng(seed))
    while True:
        u = sampler.next_clean()
        yield _augment(u, sampler.rng, cfg) if augment else u


class _Sampler:
    """Draws voice, text and speaking style; engines start on first use and are fresh per stream
    (so Piper's seeded noise replays). Festival runs batches of one voice, buffered per voice."""

    def __init__(self, split: str, rng: np.random.Generator) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use 'train' or 'heldout'")
        self.rng = rng
        specs = {n: _installed(n, [s for s in voices(split) if s.engine == n]) for n in ENGINE_WEIGHTS[split]}
        self.specs = {n: found for n, found in specs.items() if found}
        self.names = sorted(self.specs)
        if not self.names:
            hints = "; ".join(f"{n}: {INSTALL_HINT[n]}" for n in ENGINE_WEIGHTS[split])
            raise SpeechEngineError(f"no speech engine for the {split} split is installed ({hints})")
        weights = np.array([ENGINE_WEIGHTS[split][n] for n in self.names])
        self.weights = weights / weights.sum()
        self.engines: dict[str, Synthesizer] = {}
        self.buffered: dict[VoiceSpec, list[Utterance]] = {}

    def next_clean(self) -> Utterance:
        error: SpeechEngineError | None = None
        for _ in range(MAX_DRAWS):
            name = self.names[int(self.rng.choice(len(self.names), p=self.weights))]
            spec = self.specs[name][int(self.rng.integers(0, len(self.specs[name])))]
            try:
                u = self._draw(spec)
            except SpeechEngineError as exc:
                error = exc  # one broken voice or text: draw another
                continue
            if u.audio.size >= MIN_UTTERANCE_SAMPLES:
                return u
        raise SpeechEngineError(f"{MAX_DRAWS} draws gave no usable speech; last error: {error}")

    def _engine(self, name: str) -> Synthesizer:
        if name not in self.engines:
            self.engines[name] = engine(name)
        return self.engines[name]

    def _prosody(self, name: str) -> Prosody:
        tempo = float(np.exp(self.rng.uniform(np.log(0.8), np.log(1.25))))
        return Prosody(tempo=tempo, pitch=float(self.rng.uniform(0.6, 1.5)) if name == "espeak" else 1.0)

    def _draw(self, spec: VoiceSpec) -> Utterance:
        synth = self._engine(spec.engine)
        if isinstance(synth, Festival):
            if not self.buffered.get(spec):
                prosody = self._prosody(spec.engine)
                texts = [self._text(spec.language) for _ in range(FESTIVAL_BATCH)]
                speeches = synth.synthesize_many(spec.voice, texts, prosody)
                self.buffered[spec] = [
                    label(s.audio, s.phones, synth.name, spec.voice, spec.language, t)
                    for s, t in zip(speeches, texts, strict=True)
                ]
            return self.buffered[spec].pop()
        text = self._text(spec.language)
        return synthesize_with(synth, spec.voice, text, spec.language, self._prosody(spec.engine))

    def _text(self, language: str) -> str:
        """One sentence, sometimes two or three (a longer stretch with phrase pauses)."""
        count = 1 + int(self.rng.random() < 0.3) + int(self.rng.random() < 0.1)
        return " ".join(_sentence_end(text_source.random_text(language, self.rng)) for _ in range(count))


def _installed(name: str, specs: list[VoiceSpec]) -> list[VoiceSpec]:
    """The specs whose engine (and, for Festival, voice) is installed; no engine is started."""
    if not available(name):
        return []
    if name == "festival":
        return [s for s in specs if s.voice in festival_voices()]
    return specs


def _sentence_end(text: str) -> str:
    return text if text[-1:] in ".!?" else text + "."
