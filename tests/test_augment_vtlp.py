"""Voice perturbation of the training speech (issue 11): vocal-tract length and pitch move where a
voice's energy lies, keep every phone where it was, and draw nothing while they are switched off."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import find_peaks, lfilter

from lipstream.cli import build_parser
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.training.augment import (
    AugmentConfig,
    augment_speech,
    shift_pitch,
    warp_formants,
)
from lipstream.training.features import UtteranceSource
from lipstream.training.train import DEFAULTS, config_from_args
from lipstream.training.tts import Phone

F0_HZ = 120.0
FORMANTS_HZ = ((700.0, 80.0), (1200.0, 90.0), (2600.0, 120.0))  # (centre, bandwidth): an /a/
ONLY_VOICE = AugmentConfig(p_speed=0.0, p_pause=0.0, p_reverb=0.0, p_noise=0.0, p_eq=0.0, p_opus=0.0,
                           p_vtlp=1.0, p_pitch=1.0, gain_db=(0.0, 0.0))


def _vowel(seconds: float = 1.0) -> np.ndarray:
    """A glottal pulse train at F0_HZ through three formant resonators, peak 0.5."""
    pulses = np.zeros(int(seconds * SAMPLE_RATE))
    pulses[:: int(SAMPLE_RATE / F0_HZ)] = 1.0
    for centre_hz, bandwidth_hz in FORMANTS_HZ:
        radius, angle = np.exp(-np.pi * bandwidth_hz / SAMPLE_RATE), 2 * np.pi * centre_hz / SAMPLE_RATE
        pulses = lfilter([1 - radius], [1, -2 * radius * np.cos(angle), radius**2], pulses)
    return (0.5 * pulses / np.abs(pulses).max()).astype(np.float32)


def _spectrum(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    middle = audio[audio.size // 8 : -audio.size // 8]  # away from the edges' transients
    power = np.abs(np.fft.rfft(middle * np.hanning(middle.size))) ** 2
    return np.fft.rfftfreq(middle.size, 1 / SAMPLE_RATE), power


def _centroid_hz(audio: np.ndarray) -> float:
    freqs, power = _spectrum(audio)
    return float(np.sum(freqs * power) / np.sum(power))


def _harmonic_spacing_hz(audio: np.ndarray) -> float:
    """The median distance between the spectrum's harmonic peaks below 1.5 kHz: the pitch."""
    freqs, power = _spectrum(audio)
    low = freqs < 1500
    step_hz = freqs[1]
    peaks = find_peaks(power[low], distance=int(F0_HZ * 0.6 / step_hz), height=power[low].max() * 1e-3)[0]
    return float(np.median(np.diff(freqs[low][peaks])))


@pytest.mark.parametrize("alpha", [0.87, 1.15])
def test_formant_warp_moves_the_spectrum_by_alpha_and_keeps_pitch_and_length(alpha: float) -> None:
    vowel = _vowel()
    warped = warp_formants(vowel, alpha)
    assert warped.shape == vowel.shape and warped.dtype == np.float32
    assert _centroid_hz(warped) / _centroid_hz(vowel) == pytest.approx(alpha, abs=0.07)
    assert _harmonic_spacing_hz(warped) == pytest.approx(F0_HZ, rel=0.02)


@pytest.mark.parametrize("semitones", [-4.0, 3.0])
def test_pitch_shift_moves_the_harmonics_and_keeps_formants_and_length(semitones: float) -> None:
    vowel = _vowel()
    shifted = shift_pitch(vowel, semitones)
    assert shifted.shape == vowel.shape
    ratio = 2 ** (semitones / 12)
    assert _harmonic_spacing_hz(shifted) == pytest.approx(F0_HZ * ratio, rel=0.03)
    assert _centroid_hz(shifted) / _centroid_hz(vowel) == pytest.approx(1.0, abs=0.06)


def _burst_edges_s(audio: np.ndarray, hop: int = 160) -> tuple[float, float]:
    """First and last 10 ms hop above a tenth of the loudest."""
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    level = np.sqrt(np.mean(frames**2, axis=1))
    loud = np.nonzero(level > 0.1 * level.max())[0]
    return loud[0] * hop / SAMPLE_RATE, (loud[-1] + 1) * hop / SAMPLE_RATE


def test_voice_steps_keep_the_phones_and_where_the_speech_is() -> None:
    """A vowel from 0.5 to 1.3 s between silences: after both steps the phones are the same objects
    and the sound starts and stops within 20 ms of where it did."""
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2), _vowel(0.8), np.zeros(SAMPLE_RATE // 2)])
    audio = audio.astype(np.float32)
    phones = (Phone("pau", 0.0, 0.5), Phone("aa", 0.5, 1.3), Phone("pau", 1.3, 1.8))
    for seed in range(3):
        out, out_phones = augment_speech(audio, phones, "arpabet", np.random.default_rng(seed), ONLY_VOICE)
        assert out.shape == audio.shape and out_phones == phones
        assert not np.allclose(out, audio, atol=1e-3)  # the steps ran
        for before, after in zip(_burst_edges_s(audio), _burst_edges_s(out), strict=True):
            assert after == pytest.approx(before, abs=0.02)


# The default chain on _TONE, per seed: the generator's state afterwards (mod 10**12) and the
# output's sha256 prefix, recorded with the augment.py that came before these steps.
SWITCHED_OFF_REPLAY = {
    0: (854047376155, "0ff05d4acae50fb3"), 1: (214986200597, "55c637e5b6e8c8e5"),
    2: (292225282641, "408cc9af8fc4069f"), 3: (711885241210, "9fc587d09631c32c"),
    4: (261930317643, "711912eb59d7a5bb"), 5: (680519377145, "c52bca1b873b02a9"),
    6: (957586280354, "76cd30e770a045d2"), 7: (3896186147, "05fdeac182a28f61"),
}


def _tone() -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return (0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_switched_off_steps_replay_the_augment_stream_exactly() -> None:
    """With p_vtlp = p_pitch = 0 (the default) the chain draws and makes exactly what it did before
    they existed, so `lipstream train` without --vtlp/--pitch reproduces the shipped model."""
    phones = (Phone("aa", 0.0, 1.0),)
    for seed, (state, digest) in SWITCHED_OFF_REPLAY.items():
        rng = np.random.default_rng(seed)
        out, _ = augment_speech(_tone(), phones, "arpabet", rng)
        assert rng.bit_generator.state["state"]["state"] % 10**12 == state, seed
        assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == digest, seed


def test_train_options_switch_the_steps_on_and_name_them_in_the_command() -> None:
    args = build_parser("train").parse_args(["train", "--vtlp", "0.5", "--pitch", "0.3"])
    cfg = config_from_args(args)
    augment = cfg.augment_config()
    assert (augment.p_vtlp, augment.p_pitch) == (0.5, 0.3)
    assert cfg.command().endswith("--vtlp 0.5 --pitch 0.3")
    # Off, the command is the one the shipped model was made with: nothing about them in it.
    assert "--vtlp" not in DEFAULTS.command() and "--pitch" not in DEFAULTS.command()
    assert DEFAULTS.augment_config() == AugmentConfig()


class _PoolReached(Exception):
    """The run got as far as building its pool, with this source."""


def test_the_training_pool_is_made_with_the_options_perturbation(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`lipstream train --vtlp 1 --pitch 1` synthesises its pool through a source whose first
    utterance is the default source's (same voice and text), with other audio."""
    from lipstream.training.features import corpus_source
    from lipstream.training.train import train

    def capture(split: str, seed: int, count: int, workers: int, source: UtteranceSource) -> None:
        raise _PoolReached(source)

    monkeypatch.setattr("lipstream.training.features.build_pool", capture)
    args = build_parser("train").parse_args(["train", "--vtlp", "1", "--pitch", "1", "--threads", "1"])
    with pytest.raises(_PoolReached) as reached:
        train(config_from_args(args), tmp_path)
    source = reached.value.args[0]
    perturbed, plain = next(source("train", 3, True)), next(corpus_source("train", 3, True))
    assert (perturbed.voice, perturbed.text) == (plain.voice, plain.text)
    assert not np.array_equal(perturbed.audio, plain.audio)
