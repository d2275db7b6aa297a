"""Real human speech for training: the Asterisk PBX's English prompts, force-aligned to their texts.

Debian's `asterisk-core-sounds-en-g722` installs ~570 voice prompts read by one professional US
English speaker (Allison Smith; 16 kHz G.722; CC-BY-SA 3.0) and `asterisk-core-sounds-en` the text
of each (`core-sounds-en.txt.gz`). The sentences ("Please enter your password followed by the
pound key.") are turned into words (digits spelled out, `#` and `*` as "pound" and "star"), the
recordings trimmed of their silence and force-aligned with pocketsphinx, as `recorded_set` aligns
the development set; prompts the aligner cannot follow (names it has no pronunciation for, such as
"dahdi") are left out. Single words (digits, letters, the phonetic alphabet) are left out too.
None of this speech is in the development set, which stays out of training.

`lipstream train --prompts P` puts a share P of them into the training pool (`mixed_source`).
"""

import gzip
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.errors import SpeechEngineError
from lipstream.training.augment import DEFAULT_AUGMENT, AugmentConfig
from lipstream.training.corpus import PROMPTS, Utterance, augment, label
from lipstream.training.features import corpus_source, worker_pool
from lipstream.training.lipsync_set import framed
from lipstream.training.recorded_set import align, read_recording

PROMPTS_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-g722"
VOICE = "allison"
SINGLE_WORD_FOLDERS = ("digits", "letters", "phonetic", "silence")
TRIM_BELOW_PEAK_DB = 45.0  # 10 ms frames this far below the loudest are the prompt's silence
TRIM_MARGIN_S = 0.03  # kept either side of the speech
LEAD_S = (0.1, 0.5)  # silence before and after a drawn prompt (the corpus's utterances have some)
STREAM_OFFSET = 424_242  # the prompts' draws use their own generator, so the corpus's stream is unchanged

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0-999 in words ("one hundred twenty three"); ValueError above."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    raise ValueError(f"{n}: only numbers below 1000 are spelled")


def spoken_words(text: str) -> str | None:
    """The words a prompt's text is read as, lower case; None for a sound ("[beep]") or a big number."""
    if "[" in text or re.search(r"\d{4,}", text):
        return None
    t = text.lower()
    for sign, word in (("#", " pound "), ("*", " star "), ("&", " and "), ("-", " ")):
        t = t.replace(sign, word)
    t = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", t)
    t = re.sub(r"[^a-z' ]", " ", t)
    return " ".join(t.split()) or None


def transcripts(path: Path = TRANSCRIPTS) -> list[tuple[str, str]]:
    """(prompt name, its words) in the file's order, for prompts of more than a single word."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = (part.strip() for part in line.split(":", 1))
            if "/" in name and name.split("/")[0] in SINGLE_WORD_FOLDERS:
                continue
            words = spoken_words(text)
            if words:
                out.append((name, words))
    return out


def trimmed(audio: np.ndarray) -> np.ndarray:
    """The speech of a prompt, with TRIM_MARGIN_S of what surrounds it."""
    n = audio.size // HOP_SAMPLES
    power = np.mean(audio[: n * HOP_SAMPLES].reshape(n, HOP_SAMPLES) ** 2, axis=1)
    level_db = 10 * np.log10(power + 1e-12)
    loud = np.flatnonzero(level_db > level_db.max() - TRIM_BELOW_PEAK_DB)
    margin = int(TRIM_MARGIN_S * SAMPLE_RATE)
    return audio[max(0, loud[0] * HOP_SAMPLES - margin): (loud[-1] + 1) * HOP_SAMPLES + margin]


def aligned_prompt(entry: tuple[str, str]) -> Utterance | None:
    """One (name, words) prompt read, trimmed and aligned; None if pocketsphinx cannot align it."""
    name, words = entry
    audio = trimmed(read_recording(PROMPTS_DIR / f"{name}.g722"))
    try:
        _, phones = align(audio, words)
    except RuntimeError:  # pocketsphinx has no pronunciation for a word, or finds no path
        return None
    return label(audio, phones, PROMPTS, VOICE, "en", words) if phones else None


_aligned_cache: list[tuple[Utterance, ...]] = []  # filled once; forked corpus workers inherit it


def aligned_prompts(workers: int = 2) -> tuple[Utterance, ...]:
    """Every installed prompt that aligns (~310, ~13 min of speech; ~80 s on two cores), once per process."""
    if not _aligned_cache:
        if not TRANSCRIPTS.is_file():
            raise SpeechEngineError(f"training with --prompts needs the Asterisk prompts: "
                                    f"apt-get install {PACKAGES}")
        entries = [e for e in transcripts() if (PROMPTS_DIR / f"{e[0]}.g722").is_file()]
        with worker_pool(workers) as pool:
            found = pool.map(aligned_prompt, entries, chunksize=8)
        aligned = tuple(u for u in found if u is not None)
        if not aligned:
            raise SpeechEngineError(f"none of the {len(entries)} Asterisk prompts in {PROMPTS_DIR} aligns: "
                                    f"reinstall {PACKAGES}")
        _aligned_cache.append(aligned)
    return _aligned_cache[0]


def mixed_source(split: str, seed: int, augment_speech: bool, cfg: AugmentConfig = DEFAULT_AUGMENT,
                 share: float = 0.0) -> Iterator[Utterance]:
    """The corpus's stream with a share of its training utterances replaced by aligned prompts.

    The prompts are drawn by a generator of their own, so the corpus utterances that remain are
    the ones it gives without prompts, in the same order. The held-out split is the corpus's alone.
    """
    stream = corpus_source(split, seed, augment_speech, cfg)
    rng = np.random.default_rng(seed + STREAM_OFFSET)
    prompts = aligned_prompts() if split == "train" and share > 0 else ()
    while True:
        if prompts and rng.random() < share:
            prompt = prompts[int(rng.integers(len(prompts)))]
            u = framed(prompt, lead_s=float(rng.uniform(*LEAD_S)))
            yield augment(u, rng, cfg) if augment_speech else u
        else:
            yield next(stream)


def with_prompts(cfg: AugmentConfig, share: float) -> Any:
    """An UtteranceSource (picklable, for the corpus workers): the corpus with `share` of prompts."""
    return partial(mixed_source, cfg=cfg, share=share)
