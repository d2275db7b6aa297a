"""Stop closures: the silent stretch before a voiceless stop's burst belongs to the stop (lips shut)."""

import numpy as np

from lipstream.training.tts.speech import SILENCE_LABEL, Phone, Speech

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
