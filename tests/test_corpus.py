"""The training corpus: phone timings that fit the audio, viseme coverage, coarticulated targets,
augmentation that keeps labels aligned, determinism and disjoint splits."""

import numpy as np
import pytest

from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.engine.controls import JAW_OPEN, LIP_PRESS, LIP_ROUND, VISEMES
from lipstream.training import corpus
from lipstream.training.augment import AugmentConfig, add_pauses, change_speed, opus_round_trip
from lipstream.training.tts import INSTALL_HINT, Phone, available
from lipstream.training.visemes import unknown_phones

SENTENCE = "Anna bought Bob a blue moon pie, and we shall see the big cheese in Rome."
ENGINE_VOICES = {
    "festival": ("kal_diphone", "en"),
    "flite": ("kal16", "en"),
    "espeak": ("", "en-us"),
    "piper": ("joe", "en-us"),
}


@pytest.fixture(scope="module", params=sorted(ENGINE_VOICES))
def clean(request: pytest.FixtureRequest) -> corpus.Utterance:
    voice, language = ENGINE_VOICES[request.param]
    if not available(request.param):
        pytest.skip(f"{request.param} not installed: install {INSTALL_HINT[request.param]}")
    # an installed engine that fails is a failure, not a skip: ./run installs every voice used here
    return corpus.synthesize(request.param, voice, SENTENCE, language)


def _speech_span_s(audio: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms hop louder than 2% of the loudest (where the talking is)."""
    hops = audio[: audio.size // HOP_SAMPLES * HOP_SAMPLES].reshape(-1, HOP_SAMPLES)
    rms = np.sqrt(np.mean(hops**2, axis=1))
    loud = np.nonzero(rms > 0.02 * rms.max())[0]
    return loud[0] * HOP_SAMPLES / SAMPLE_RATE, (loud[-1] + 1) * HOP_SAMPLES / SAMPLE_RATE


def test_phones_tile_the_audio_and_match_where_speech_is(clean: corpus.Utterance) -> None:
    phones = clean.phones
    duration = clean.audio.size / SAMPLE_RATE
    assert phones[0].start_s == 0.0 and abs(phones[-1].end_s - duration) < 0.05
    for a, b in zip(phones, phones[1:], strict=False):
        assert a.end_s == pytest.approx(b.start_s) and b.end_s > b.start_s
    speaking = [i for i, v in enumerate(clean.visemes) if VISEMES[v] != "sil"]
    onset_s, offset_s = _speech_span_s(clean.audio)
    # The labelled speech starts and stops where the audio is loud, within 60 ms.
    assert abs(speaking[0] * 0.01 - onset_s) < 0.06 and abs((speaking[-1] + 1) * 0.01 - offset_s) < 0.06


def test_frame_labels_have_one_entry_per_mel_frame(clean: corpus.Utterance) -> None:
    n_frames = clean.audio.size // HOP_SAMPLES
    assert clean.visemes.shape == (n_frames,) and clean.visemes.dtype == np.int64
    assert clean.controls.shape == (n_frames, 5) and clean.controls.dtype == np.float32
    assert clean.controls.min() >= 0.0 and clean.controls.max() <= 1.0


def test_bilabial_closures_are_reached(clean: corpus.Utterance) -> None:
    phoneset = corpus.PHONESET[clean.engine]
    bilabials = [p for p in clean.phones if _is_bilabial(p, phoneset)]
    assert len(bilabials) >= 4  # Bob, bought, blue, moon, pie, big
    for phone in bilabials:
        centre = int((phone.start_s + phone.end_s) / 2 / 0.01)
        assert clean.controls[centre, LIP_PRESS] > 0.95 and clean.controls[centre, JAW_OPEN] < 0.05


def _is_bilabial(phone: Phone, phoneset: str) -> bool:
    label = phone.label.strip("ˈˌː").lower()
    return label in ("p", "b", "m")


def test_rounding_on_oo_and_rest_in_silence(clean: corpus.Utterance) -> None:
    u_frames = [i for i, v in enumerate(clean.visemes) if VISEMES[v] == "U"]
    assert clean.controls[u_frames, LIP_ROUND].max() > 0.8
    silent = np.nonzero(clean.visemes == 0)[0]
    # Deep inside silence (100 ms from any sound) the mouth is at rest.
    deep = [t for t in silent if np.all(clean.visemes[max(0, t - 10) : t + 11] == 0)]
    if deep:
        assert np.abs(clean.controls[deep]).max() < 1e-3


def test_english_phones_are_covered_by_the_viseme_map(clean: corpus.Utterance) -> None:
    texts = [
        SENTENCE,
        "The quick brown fox jumps over the lazy dog while zebras chew hay.",
        "Judge Thorne's vision: yellow jars, thin wheels, ugly young oysters.",
    ]
    phones = [
        p for t in texts for p in corpus.synthesize(clean.engine, clean.voice, t, clean.language).phones
    ]
    unknown = unknown_phones(tuple(phones), corpus.PHONESET[clean.engine])
    assert len(unknown) / len(phones) < 0.01, unknown


def test_augmentation_keeps_labels_aligned_and_is_deterministic(clean: corpus.Utterance) -> None:
    for seed in range(6):
        a = corpus.augment(clean, np.random.default_rng(seed))
        b = corpus.augment(clean, np.random.default_rng(seed))
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.controls, b.controls)
        assert a.visemes.shape == (a.audio.size // HOP_SAMPLES,) and a.controls.shape[0] == a.visemes.size
        assert abs(a.phones[-1].end_s - a.audio.size / SAMPLE_RATE) < 0.02
        assert np.isfinite(a.audio).all() and np.abs(a.audio).max() <= 1.0


def test_opus_round_trip_keeps_duration_and_timing() -> None:
    rng = np.random.default_rng(0)
    audio = np.zeros(SAMPLE_RATE, np.float32)
    audio[4000:6000] = rng.standard_normal(2000).astype(np.float32) * 0.3
    out = opus_round_trip(audio, 24_000)
    assert out.size == audio.size
    lag = int(np.argmax(np.correlate(out, audio[4000:6000], "valid"))) - 4000
    assert abs(lag) <= 0.02 * SAMPLE_RATE  # within 20 ms


def test_splits_are_disjoint_and_heldout_has_natural_english() -> None:
    train, heldout = corpus.voices("train"), corpus.voices("heldout")
    assert train and heldout and not set(train) & set(heldout)
    assert corpus.VoiceSpec("piper", "joe", "en-us") in heldout
    assert any(v.language.startswith("en") for v in train)


def test_utterance_stream_is_deterministic() -> None:
    first = [u.audio for u, _ in zip(corpus.utterances("train", seed=7), range(3), strict=False)]
    again = [u.audio for u, _ in zip(corpus.utterances("train", seed=7), range(3), strict=False)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_every_espeak_voice_of_the_splits_speaks() -> None:
    if not available("espeak"):
        pytest.skip(f"espeak-ng not installed: install {INSTALL_HINT['espeak']}")
    specs = [s for s in corpus.voices("train") + corpus.voices("heldout") if s.engine == "espeak"]
    languages = {s.language for s in specs}
    for spec in [*specs[:: len(specs) // 10], *(corpus.VoiceSpec("espeak", "", lang) for lang in languages)]:
        u = corpus.synthesize("espeak", spec.voice, "one two three", spec.language)
        assert u.audio.size > SAMPLE_RATE // 4 and np.any(u.visemes != 0), spec


def test_voiceless_stop_closures_are_inside_the_stop() -> None:
    """espeak-ng starts /p/ at the burst; the silent closure before it must be labelled /p/ too."""
    if not available("espeak"):
        pytest.skip(f"espeak-ng not installed: install {INSTALL_HINT['espeak']}")
    u = corpus.synthesize("espeak", "", "a purple pepper pot", "en-us")
    hops = u.audio[: u.audio.size // 80 * 80].reshape(-1, 80)
    level_db = 10 * np.log10(np.mean(hops.astype(np.float64) ** 2, axis=1) + 1e-12)
    level_db -= level_db.max()
    stops = [p for p in u.phones if p.label.lstrip("ˈˌ") == "p"]
    assert len(stops) >= 3
    for p in stops:
        first_hop = int(np.ceil(p.start_s / 0.005))
        assert level_db[first_hop] < -30, p  # the stop starts with its (silent) closure


def test_speed_change_scales_audio_phones_and_frames(clean: corpus.Utterance) -> None:
    for factor in (0.85, 1.15):
        audio, phones = change_speed(clean.audio, clean.phones, factor)
        fast = corpus.label(audio, phones, clean.engine, clean.voice, clean.language, clean.text)
        assert fast.audio.size == pytest.approx(clean.audio.size / factor, rel=0.01)
        assert fast.visemes.size == pytest.approx(clean.visemes.size / factor, abs=2)
        assert fast.phones[-1].end_s == pytest.approx(fast.audio.size / SAMPLE_RATE, abs=0.002)
        # Every phone keeps its label and shrinks or grows by the same factor.
        for before, after in zip(clean.phones, fast.phones, strict=True):
            assert after.label == before.label
            assert after.start_s == pytest.approx(before.start_s / factor, rel=0.01, abs=0.002)


def test_pauses_and_breaths_are_labelled_rest() -> None:
    rng = np.random.default_rng(0)
    audio = (0.1 * np.sin(np.arange(SAMPLE_RATE) * 0.05)).astype(np.float32)
    phones = (Phone("aa", 0.0, 1.0),)
    cfg = AugmentConfig(p_breath=1.0, pause_s=(0.5, 0.6))
    padded, padded_phones = add_pauses(audio, phones, "arpabet", rng, cfg)
    u = corpus.label(padded, padded_phones, "flite", "kal", "en", "")
    lead_frames = int(padded_phones[0].end_s / 0.01)
    assert np.abs(padded[: int(padded_phones[0].end_s * SAMPLE_RATE)]).max() > 0  # a breath is there
    assert np.all(u.visemes[: lead_frames - 1] == 0)
    assert np.abs(u.controls[: lead_frames - 15]).max() < 1e-3  # rest until the lips anticipate speech


def test_espeak_gives_the_same_audio_whatever_was_said_before() -> None:
    if not available("espeak"):
        pytest.skip(f"espeak-ng not installed: install {INSTALL_HINT['espeak']}")
    first = corpus.synthesize("espeak", "+m1", "Hello there, big pumpkin.", "en-us")
    corpus.synthesize("espeak", "+f2", "Guten Tag, wie geht es dir?", "de")
    again = corpus.synthesize("espeak", "+m1", "Hello there, big pumpkin.", "en-us")
    assert np.array_equal(first.audio, again.audio)
