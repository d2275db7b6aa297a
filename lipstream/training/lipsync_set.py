"""The fixed held-out speech that benchmarks/lipsync.py renders and scores.

Voices from the corpus's held-out split only (see `corpus`), in a fixed rotation so every run of
the same seed scores the same utterances: Piper joe (natural speech, twice per round), Festival
slt HTS, flite slt, espeak-ng's held-out variants (+m3, +f4) in English and its held-out languages
(Swedish, Hindi). Each utterance is 2-4 s of speech (longer sentences are cut at a phone boundary),
brought to -20 dBFS (a typical microphone level; the baseline is calibrated there) and framed by
LEAD_S of silence on both sides, so every utterance starts and ends with the mouth at rest.
"""

import logging

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import SpeechEngineError
from lipstream.training import text as text_source
from lipstream.training.corpus import PHONESET, Utterance, VoiceSpec, label, split_of, synthesize_with
from lipstream.training.tts import SILENCE_LABEL, Phone, Synthesizer, engine

log = logging.getLogger(__name__)

ROTATION = (
    VoiceSpec("piper", "joe", "en-us"),
    VoiceSpec("festival", "cmu_us_slt_arctic_hts", "en"),
    VoiceSpec("espeak", "+m3", "en-us"),
    VoiceSpec("flite", "slt", "en"),
    VoiceSpec("piper", "joe", "en-us"),
    VoiceSpec("espeak", "+f1", "sv"),
    VoiceSpec("espeak", "+f4", "en"),
    VoiceSpec("espeak", "+m2", "hi"),
)
MIN_SPEECH_S, MAX_SPEECH_S = 2.0, 4.0
LEAD_S = 0.3
LEVEL_DBFS = -20.0
TRIES = 8  # texts drawn per slot before the slot's voice is given up


def crop(utt: Utterance, max_s: float) -> Utterance:
    """The utterance up to the last phone ending by max_s (the phones keep their timing)."""
    phones = tuple(p for p in utt.phones if p.end_s <= max_s)
    if not phones or len(phones) == len(utt.phones):
        return utt
    end = int(round(phones[-1].end_s * SAMPLE_RATE))
    return label(utt.audio[:end], phones, utt.engine, utt.voice, utt.language, utt.text)


def framed(utt: Utterance, lead_s: float = LEAD_S, level_dbfs: float = LEVEL_DBFS) -> Utterance:
    """Levelled speech with `lead_s` of silence (labelled as such) before and after."""
    rms = float(np.sqrt(np.mean(utt.audio.astype(np.float64) ** 2)))
    audio = np.clip(utt.audio * 10 ** (level_dbfs / 20) / max(rms, 1e-6), -1.0, 1.0)
    pad = np.zeros(int(lead_s * SAMPLE_RATE), np.float32)
    silence = SILENCE_LABEL[PHONESET[utt.engine]]
    end_s = lead_s + audio.size / SAMPLE_RATE
    phones = (Phone(silence, 0.0, lead_s),
              *(Phone(p.label, p.start_s + lead_s, p.end_s + lead_s) for p in utt.phones),
              Phone(silence, end_s, end_s + lead_s))
    return label(np.concatenate([pad, audio, pad]), phones, utt.engine, utt.voice, utt.language, utt.text)


def _draw(spec: VoiceSpec, rng: np.random.Generator, engines: dict[str, Synthesizer]) -> Utterance | None:
    for _ in range(TRIES):
        try:
            text = text_source.random_text(spec.language, rng)
            if spec.engine not in engines:
                engines[spec.engine] = engine(spec.engine)
            utt = synthesize_with(engines[spec.engine], spec.voice, text, spec.language)
        except SpeechEngineError as exc:
            log.warning("held-out voice %s skipped: %s", spec, exc)
            return None
        if utt.audio.size >= MIN_SPEECH_S * SAMPLE_RATE:
            return framed(crop(utt, MAX_SPEECH_S))
    return None


def heldout_set(count: int, seed: int) -> list[Utterance]:
    """`count` clean held-out utterances, the same for the same seed (and installed engines).

    Drawn with engines of their own: Piper's seeded noise runs on from call to call of one engine,
    so the process's shared one would speak differently after anything it said before.
    """
    assert all(split_of(spec) == "heldout" for spec in ROTATION)
    rng = np.random.default_rng(seed)
    engines: dict[str, Synthesizer] = {}
    out: list[Utterance] = []
    broken: set[VoiceSpec] = set()
    slot = 0
    while len(out) < count and len(broken) < len(set(ROTATION)):
        spec = ROTATION[slot % len(ROTATION)]
        slot += 1
        if spec in broken:
            continue
        utt = _draw(spec, rng, engines)
        if utt is None:
            broken.add(spec)
        else:
            out.append(utt)
    if not out:
        raise SpeechEngineError("no held-out voice could speak: install piper-tts, festival, flite "
                                "or espeak-ng (see `lipstream.training.tts.INSTALL_HINT`)")
    return out
