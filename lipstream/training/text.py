"""Offline text to speak: gettext catalogs (translated UI sentences in ~160 languages) and a word list.

English comes from the catalogs' msgids (the source strings are English) and from random word
sequences out of `/usr/share/dict/words` (Debian `wamerican`); other languages from msgstr. Where
a source is missing the module falls back to a few built-in sentences and warns once.
"""

import gettext
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

LOCALE_DIR = Path("/usr/share/locale")  # Debian/Ubuntu's gettext catalogs
WORDS_FILE = Path("/usr/share/dict/words")
MIN_CHARS, MAX_CHARS, MIN_WORDS = 12, 160, 3
MAX_CATALOGS = 60  # per language: enough variety, bounded start-up time

# Format strings, markup, paths, accelerators, options, identifiers (camelCase, NULL): not speech.
_IDENTIFIER = re.compile(r"\w[a-z][A-Z]|[A-Z]{2}[a-z]|\b[A-Z]{4,}\b")
_REJECT = re.compile(r"[%{}<>\\/@_=|#*\[\]~^$&\"()]|https?:|--|\.\.\.|\w\.\w|\d{3}")

FALLBACK_SENTENCES = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "We hope you enjoy the video, and do not forget to share it with your friends.",
        "My mother bought a big blue umbrella for the beach.",
        "Would you like some more apple pie or a cup of warm milk?",
        "Peter picked a peck of pickled peppers, then went home by bus.",
    ),
}


def _usable(text: str) -> bool:
    return (
        MIN_CHARS <= len(text) <= MAX_CHARS
        and text.isprintable()
        and text[0].isalpha()
        and len(text.split()) >= MIN_WORDS
        and not _REJECT.search(text)
        and not _IDENTIFIER.search(text)
        and sum(ch.isalpha() for ch in text) >= 0.7 * len(text.replace(" ", ""))
    )


def _catalog_dirs(language: str) -> list[Path]:
    """Locale folders for an espeak-style language name ("pt-br" -> pt_BR, then pt)."""
    base, _, region = language.partition("-")
    names = [f"{base}_{region.upper()}"] if region else []
    return [LOCALE_DIR / name / "LC_MESSAGES" for name in [*names, base]]


def _read_catalog(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as f:
            catalog: dict[object, str] = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
    except (OSError, UnicodeDecodeError, ValueError):  # a broken or non-UTF-8 catalog: skip it
        return {}
    return {k: v for k, v in catalog.items() if isinstance(k, str) and k}


@lru_cache(maxsize=64)
def sentences(language: str) -> tuple[str, ...]:
    """Usable sentences in `language` (espeak-ng language name); may be empty."""
    english = language == "en" or language.startswith("en-")
    files = sorted(LOCALE_DIR.glob("de/LC_MESSAGES/*.mo")) if english else []
    if not english:
        for folder in _catalog_dirs(language):
            files = sorted(folder.glob("*.mo"))
            if files:
                break
    found: set[str] = set()
    for path in files[:MAX_CATALOGS]:
        catalog = _read_catalog(path)
        # Untranslated entries (msgstr == msgid) would put English into every language.
        texts = catalog.keys() if english else (v for k, v in catalog.items() if v != k)
        found.update(t.strip() for t in texts if _usable(t.strip()))
    return tuple(sorted(found))


@lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    if not WORDS_FILE.exists():
        return ()
    words = WORDS_FILE.read_text(encoding="utf-8", errors="replace").split()
    return tuple(w for w in words if w.isalpha() and w.isascii() and 2 <= len(w) <= 12)


def _fallback(language: str) -> tuple[str, ...]:
    warnings.warn(
        f"no offline text for {language!r} (gettext catalogs in {LOCALE_DIR} missing): using built-in"
        " English sentences",
        stacklevel=3,
    )
    return FALLBACK_SENTENCES["en"]


def random_text(language: str, rng: np.random.Generator) -> str:
    """A sentence to speak in `language`; English mixes catalog sentences and random word strings."""
    english = language == "en" or language.startswith("en-")
    words = english_words() if english else ()
    if words and rng.random() < 0.4:
        picks = rng.integers(0, len(words), size=int(rng.integers(3, 12)))
        return " ".join(words[int(i)] for i in picks).capitalize() + "."
    pool = sentences(language) or _fallback(language)
    return pool[int(rng.integers(0, len(pool)))]
