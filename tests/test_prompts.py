"""Recorded prompts in training: the words they are read as, their alignment, and how they join the pool."""

from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.training import prompts
from lipstream.training.corpus import PHONESET, PROMPTS
from lipstream.training.features import corpus_source
from lipstream.training.prompts import (
    LEAD_S,
    PACKAGES,
    PROMPTS_DIR,
    TRANSCRIPTS,
    mixed_source,
    number_words,
    spoken_words,
    transcripts,
)
from lipstream.training.tts import ARPABET

installed = pytest.mark.skipif(not (TRANSCRIPTS.is_file() and PROMPTS_DIR.is_dir()),
                               reason=f"the prompts come from the Debian packages {PACKAGES}")
HOPS_PER_S = SAMPLE_RATE // HOP_SAMPLES
# prompts with several /p/ and /b/, whose closures are silent in any recording
WITH_STOPS = ("agent-pass", "vm-password", "auth-incorrect", "vm-pls-try-again")


def test_a_prompts_text_becomes_the_words_it_is_read_as() -> None:
    assert spoken_words("Please enter your password followed by the pound key.") == \
        "please enter your password followed by the pound key"
    assert spoken_words("Press 1 to mute, 2 to lock & # to exit; 7-11 or * 120") == \
        "press one to mute two to lock and pound to exit seven eleven or star one hundred twenty"
    assert spoken_words("[this is a simple beep tone]") is None  # a sound, nothing said
    assert spoken_words("Call 5551234") is None  # read digit by digit or as a number: unknown
    assert [number_words(n) for n in (0, 13, 40, 99, 100, 305)] == \
        ["zero", "thirteen", "forty", "ninety nine", "one hundred", "three hundred five"]
    with pytest.raises(ValueError):
        number_words(1000)


@installed
def test_the_transcripts_give_sentences_and_leave_out_single_words() -> None:
    entries = dict(transcripts())
    assert len(entries) > 300
    assert entries["agent-pass"] == "please enter your password followed by the pound key"
    assert not [name for name in entries if name.split("/")[0] in ("digits", "letters", "phonetic")]
    assert all("[" not in words and words == words.lower() for words in entries.values())


@installed
def test_prompts_align_with_their_stops_on_the_closures() -> None:
    """Each aligned /p b/ holds a 10 ms hop at least 10 dB below the 80 ms either side: the lips
    were shut there; and the speech starts within the trim margin."""
    pytest.importorskip("pocketsphinx", reason="aligning needs pocketsphinx (the 'train' extra)")
    words = dict(transcripts())
    dips = []
    for name in WITH_STOPS:
        utt = prompts.aligned_prompt((name, words[name]))
        assert utt is not None and utt.engine == PROMPTS and PHONESET[utt.engine] == ARPABET
        assert utt.text == words[name] and utt.phones[0].start_s == 0.0
        hops = utt.audio[: utt.audio.size // HOP_SAMPLES * HOP_SAMPLES].reshape(-1, HOP_SAMPLES)
        db = 10 * np.log10((hops.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
        for p in utt.phones:
            lo, hi = round(p.start_s * HOPS_PER_S), round(p.end_s * HOPS_PER_S)
            if p.label in ("p", "b") and lo >= 8 and hi + 8 <= db.size and hi > lo:
                dips.append(np.median(np.r_[db[lo - 8: lo], db[hi: hi + 8]]) - db[lo:hi].min())
    assert len(dips) >= 6
    assert min(dips) >= 10, sorted(dips)


@installed
def test_mixing_keeps_the_corpus_stream_and_draws_prompts_at_their_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pocketsphinx", reason="aligning needs pocketsphinx (the 'train' extra)")
    words = dict(transcripts())
    aligned = tuple(prompts.aligned_prompt((name, words[name])) for name in WITH_STOPS[:2])
    monkeypatch.setattr(prompts, "_aligned_cache", [aligned])  # two real prompts, not all ~310
    mixed = mixed_source("train", 5, False, share=0.5)
    drawn = [next(mixed) for _ in range(10)]
    from_prompts = [u for u in drawn if u.engine == PROMPTS]
    assert 2 <= len(from_prompts) <= 8
    for u in from_prompts:  # a prompt framed in silence of LEAD_S
        assert u.text in {a.text for a in aligned}
        lead = u.phones[0].end_s
        assert LEAD_S[0] <= lead <= LEAD_S[1] and np.abs(u.audio[: int(lead * SAMPLE_RATE)]).max() == 0
    corpus = corpus_source("train", 5, False)
    assert [u.text for u in drawn if u.engine != PROMPTS] == \
        [next(corpus).text for _ in range(len(drawn) - len(from_prompts))]
    # the held-out split, and a share of 0, are the corpus alone
    for split, share in (("heldout", 1.0), ("train", 0.0)):
        stream = mixed_source(split, 5, False, share=share)
        assert all(next(stream).engine != PROMPTS for _ in range(4)), split


class _PoolReached(Exception):
    """The run got as far as building its pool, with this source."""


@installed
def test_lipstream_train_prompts_builds_its_pool_with_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs torch (the 'train' extra)")
    from lipstream.cli import build_parser
    from lipstream.training.train import DEFAULTS, config_from_args, train

    words = dict(transcripts())
    one = prompts.aligned_prompt(("agent-pass", words["agent-pass"]))
    monkeypatch.setattr(prompts, "_aligned_cache", [(one,)])

    def capture(split: str, seed: int, count: int, workers: int, source: object) -> None:
        raise _PoolReached(source)

    monkeypatch.setattr("lipstream.training.features.build_pool", capture)
    cfg = config_from_args(build_parser("train").parse_args(["train", "--prompts", "1", "--threads", "1"]))
    assert cfg.command().endswith("--prompts 1") and "--prompts" not in DEFAULTS.command()
    with pytest.raises(_PoolReached) as reached:
        train(cfg, tmp_path)
    utt = next(reached.value.args[0]("train", 3, True))
    assert utt.engine == PROMPTS and utt.text == words["agent-pass"]


def test_training_with_prompts_that_are_missing_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="training needs torch (the 'train' extra)")
    from lipstream.cli import main

    options = ["--prompts", "0.5", "--steps", "2", "--pool-utterances", "2", "--val-utterances", "1",
               "--threads", "1", "--calibrate-prompts", "0"]
    monkeypatch.setattr(prompts, "_aligned_cache", [])
    monkeypatch.setattr(prompts, "TRANSCRIPTS", tmp_path / "core-sounds-en.txt.gz")
    assert main(["train", "--out", str(tmp_path / "a"), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"apt-get install {PACKAGES}" in err
    if TRANSCRIPTS.is_file():  # the texts are there but no recording is: nothing aligns
        monkeypatch.setattr(prompts, "TRANSCRIPTS", TRANSCRIPTS)
        monkeypatch.setattr(prompts, "PROMPTS_DIR", tmp_path)
        assert main(["train", "--out", str(tmp_path / "b"), *options]) == 2
        assert "none of the 0 Asterisk prompts" in capsys.readouterr().err


@installed
def test_calibration_fits_on_drawn_prompts_framed_in_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pocketsphinx", reason="aligning needs pocketsphinx (the 'train' extra)")
    from lipstream.training.calibrate import PROMPT_LEAD_S, recorded_prompts

    words = dict(transcripts())
    aligned = tuple(prompts.aligned_prompt((name, words[name])) for name in WITH_STOPS)
    monkeypatch.setattr(prompts, "_aligned_cache", [aligned])  # four real prompts, not all ~310
    drawn = recorded_prompts(3, seed=1)
    assert [u.text for u in drawn] == [u.text for u in recorded_prompts(3, seed=1)]  # by seed
    assert len({u.text for u in drawn}) == 3 and {u.text for u in drawn} <= {u.text for u in aligned}
    for u in drawn:
        lead = int(PROMPT_LEAD_S * SAMPLE_RATE)
        assert np.abs(u.audio[:lead]).max() == 0 and np.abs(u.audio[-lead:]).max() == 0
        assert u.phones[0].end_s == pytest.approx(PROMPT_LEAD_S)
    assert recorded_prompts(0, seed=1) == []
    assert len(recorded_prompts(10, seed=1)) == 4  # no more than there are


def test_calibrating_on_prompts_that_are_not_installed_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lipstream.training import calibrate

    monkeypatch.setattr(prompts, "TRANSCRIPTS", tmp_path / "missing.txt.gz")
    monkeypatch.setattr(prompts, "_aligned_cache", [])
    monkeypatch.setattr(calibrate, "heldout_set", lambda count, seed: [])
    with pytest.raises(SystemExit) as stopped:
        calibrate.main(["--utterances", "0", "--prompts", "2"])
    assert "apt-get install asterisk-core-sounds-en" in str(stopped.value)
    with pytest.raises(SystemExit, match="0 or more"):
        calibrate.main(["--prompts", "-1"])
    with pytest.raises(SystemExit, match="nothing to fit on"):
        calibrate.main(["--utterances", "0"])
