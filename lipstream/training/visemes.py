"""Phone -> viseme: Festival/flite ARPAbet names and espeak-ng/Piper IPA onto the 15 Oculus visemes.

A phone maps to one viseme, or to two for diphthongs ("ay" = aa then I), which then share the
phone's duration. Glottal fricatives (h) take the shape of the next phone: the lips are already
there. Unknown phones fall back to a neutral mid vowel ("E"); `is_known` lets callers count them.
"""

import unicodedata
from functools import lru_cache

from lipstream.engine.controls import VISEMES
from lipstream.training.tts import ARPABET, Phone

NEXT = "next"  # take the viseme of the following phone
UNKNOWN_FALLBACK = "E"

ARPABET_VISEMES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(["pau", "h#", "#", "sil", "brth", "_", "ssil"], ("sil",)),
    **dict.fromkeys(["p", "b", "m", "em"], ("PP",)),
    **dict.fromkeys(["f", "v"], ("FF",)),
    **dict.fromkeys(["th", "dh"], ("TH",)),
    **dict.fromkeys(["t", "d", "dx"], ("DD",)),
    **dict.fromkeys(["k", "g", "ng"], ("kk",)),
    **dict.fromkeys(["ch", "jh", "sh", "zh"], ("CH",)),
    **dict.fromkeys(["s", "z"], ("SS",)),
    **dict.fromkeys(["n", "en", "l", "el", "nx"], ("nn",)),
    **dict.fromkeys(["r", "er", "axr"], ("RR",)),
    **dict.fromkeys(["aa", "ae", "ah"], ("aa",)),
    **dict.fromkeys(["eh", "ax"], ("E",)),
    **dict.fromkeys(["ih", "iy", "y", "ix"], ("I",)),
    "ao": ("O",),
    **dict.fromkeys(["uh", "uw", "w"], ("U",)),
    "aw": ("aa", "U"),
    "ay": ("aa", "I"),
    "ey": ("E", "I"),
    "ow": ("O", "U"),
    "oy": ("O", "I"),
    "hh": (NEXT,),
}

# IPA segments, longest first where one is a prefix of another (affricates before their parts).
IPA_VISEMES: dict[str, str] = {
    **dict.fromkeys(["tʃ", "dʒ", "tɕ", "dʑ", "ʈʂ", "ɖʐ", "ʃ", "ʒ", "ɕ", "ʑ", "ʂ", "ʐ", "ç"], "CH"),
    **dict.fromkeys(["ts", "dz", "s", "z"], "SS"),
    **dict.fromkeys(["pf"], "PP"),
    **dict.fromkeys(["p", "b", "m", "ɓ", "ʙ"], "PP"),
    **dict.fromkeys(["f", "v", "ɱ", "ɸ", "β", "ʋ"], "FF"),
    **dict.fromkeys(["θ", "ð"], "TH"),
    **dict.fromkeys(["t", "d", "ʈ", "ɖ", "ɗ", "ɾ", "ɽ", "ʔ"], "DD"),
    **dict.fromkeys(["k", "g", "ɡ", "ŋ", "q", "ɢ", "x", "ɣ", "χ", "ʁ", "ʀ", "c", "ɟ", "ɴ", "ʝ"], "kk"),
    **dict.fromkeys(["n", "ɲ", "ɳ", "l", "ɫ", "ʎ", "ɭ", "ɬ", "ɮ", "ʟ"], "nn"),
    **dict.fromkeys(["r", "ɹ", "ɻ", "ɚ", "ɝ", "ɺ"], "RR"),
    **dict.fromkeys(["a", "ɑ", "ʌ", "ɐ", "æ", "ɶ", "ä"], "aa"),
    **dict.fromkeys(["e", "ɛ", "ε", "ə", "ɘ", "ɜ", "ɞ", "ɤ"], "E"),
    **dict.fromkeys(["i", "ɪ", "ɨ", "ɯ", "j", "ʲ", "ᵻ", "ɪ̈"], "I"),
    **dict.fromkeys(["o", "ɔ", "ɒ", "ø", "œ", "ɵ"], "O"),
    **dict.fromkeys(["u", "ʊ", "w", "ʷ", "ɥ", "ʉ", "y", "ʏ", "ʍ"], "U"),
    **dict.fromkeys(["h", "ɦ", "ħ", "ʕ", "ʰ"], NEXT),
    **dict.fromkeys(["_", " ", "^", "$", ",", ".", "!", "?", ";", ":"], "sil"),
}
_IPA_MARKS = set("ˈˌːˑ‿͡-'\"") | {"\u0361", "\u035c"}
_SECONDARY = set("ʲʰʷˠˤ")
_MAX_SEGMENT = max(len(k) for k in IPA_VISEMES)


def _strip_ipa(label: str) -> str:
    # Drop stress, length and tie marks and combining diacritics (nasal ~, syllabic, voiceless ring).
    # Secondary articulation (ʲ ʰ ʷ) after a consonant is dropped; alone it is a phone of its own.
    decomposed = unicodedata.normalize("NFD", label)
    kept = "".join(ch for ch in decomposed if ch not in _IPA_MARKS and not unicodedata.combining(ch))
    return kept[:1] + "".join(ch for ch in kept[1:] if ch not in _SECONDARY)


@lru_cache(maxsize=4096)
def phone_visemes(label: str, phoneset: str) -> tuple[tuple[str, ...], bool]:
    """(visemes of the phone, in order, with NEXT placeholders; whether every part was known)."""
    if phoneset == ARPABET:
        key = label.lower().rstrip("012")  # CMU dictionaries mark vowel stress with digits
        return ARPABET_VISEMES.get(key, (UNKNOWN_FALLBACK,)), key in ARPABET_VISEMES
    text = _strip_ipa(label)
    if not text:
        return ("sil",), True
    parts: list[str] = []
    known, i = True, 0
    while i < len(text):
        for size in range(min(_MAX_SEGMENT, len(text) - i), 0, -1):
            if text[i : i + size] in IPA_VISEMES:
                parts.append(IPA_VISEMES[text[i : i + size]])
                i += size
                break
        else:
            parts.append(UNKNOWN_FALLBACK)
            known, i = False, i + 1
    deduped = tuple(v for j, v in enumerate(parts) if j == 0 or v != parts[j - 1])
    return deduped[:3], known


def is_known(label: str, phoneset: str) -> bool:
    return phone_visemes(label, phoneset)[1]


def unknown_phones(phones: tuple[Phone, ...], phoneset: str) -> list[str]:
    """Labels the map does not know (they were given UNKNOWN_FALLBACK); for corpus summaries."""
    return [p.label for p in phones if not is_known(p.label, phoneset)]


def viseme_segments(phones: tuple[Phone, ...], phoneset: str) -> list[tuple[str, float, float]]:
    """(viseme, start_s, end_s) spans: diphthongs split evenly, NEXT resolved to the following viseme."""
    spans: list[tuple[str, float, float]] = []
    for phone in phones:
        parts = phone_visemes(phone.label, phoneset)[0]
        step = (phone.end_s - phone.start_s) / len(parts)
        spans += [(v, phone.start_s + k * step, phone.start_s + (k + 1) * step) for k, v in enumerate(parts)]
    resolved: list[tuple[str, float, float]] = []
    following = "sil"
    for viseme, start, end in reversed(spans):
        if viseme == NEXT:
            viseme = following if following != "sil" else "E"
        resolved.append((viseme, start, end))
        following = viseme
    resolved.reverse()
    return resolved


VISEME_INDEX = {name: i for i, name in enumerate(VISEMES)}
