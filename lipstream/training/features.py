"""Training features: a pool of corpus utterances as log-mel + targets, and random crops of it.

Text-to-speech with augmentation costs far more than a training step, so each run synthesises a
pool once (in worker processes, deterministic from the seed) and samples crops from it, adding
cheap feature-domain variation (level, stream edges) on top of the corpus's audio augmentation.
The features are exactly the engine's (`lipstream.engine.mel.log_mel`), so training and
inference see the same numbers.
"""

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing.pool import Pool
from typing import Any

import numpy as np

from lipstream.engine.audio import rms
from lipstream.engine.constants import MEL_FRAMES_PER_SECOND, SAMPLE_RATE
from lipstream.engine.mel import SILENCE_LOG_MEL, log_mel, mel_filterbank

log = logging.getLogger(__name__)

UtteranceSource = Callable[[str, int, bool], Iterator[Any]]  # (split, seed, augment) -> utterances
CHUNK_UTTERANCES = 25  # utterances per worker task; each task has its own seed


@dataclass(frozen=True)
class Example:
    """One utterance's features and per-mel-frame targets."""

    mel: np.ndarray  # (T, N_MELS) float16 log10 mel power
    controls: np.ndarray  # (T, N_CONTROLS) float16 in [0, 1]
    visemes: np.ndarray  # (T,) int8 viseme index
    engine: str
    voice: str
    language: str


def featurize(utt: Any) -> Example:
    mel = log_mel(np.asarray(utt.audio, np.float32))
    n = min(len(mel), len(utt.visemes), len(utt.controls))
    return Example(mel[:n].astype(np.float16), np.asarray(utt.controls[:n], np.float16),
                   np.asarray(utt.visemes[:n], np.int8), str(utt.engine), str(utt.voice), str(utt.language))


def corpus_source(split: str, seed: int, augment: bool, cfg: Any = None) -> Iterator[Any]:
    """The corpus's utterances, augmented with `cfg` (an AugmentConfig; None: the default)."""
    from lipstream.training import corpus
    from lipstream.training.augment import DEFAULT_AUGMENT

    return corpus.utterances(split, seed, augment, cfg or DEFAULT_AUGMENT)  # type: ignore[no-any-return]


def augmented_source(cfg: Any) -> UtteranceSource:
    """The corpus source with another augmentation; picklable, for the worker processes."""
    return partial(corpus_source, cfg=cfg)


def _chunk(task: tuple[UtteranceSource, str, int, int, bool]) -> list[Example]:
    source, split, seed, count, augment = task
    stream = source(split, seed, augment)
    return [featurize(next(stream)) for _ in range(count)]


@contextmanager
def worker_pool(workers: int) -> Iterator[Pool]:
    """Processes for corpus synthesis, and a scratch folder of theirs that goes with them.

    Fork, not spawn: spawn re-imports the main module, and `python -m lipstream` has no guard.
    The workers keep SIGTERM's default action, so the pool's end (it sends SIGTERM) never waits
    on Python code in a worker: a Python handler there could fire inside the pool's own queue
    locks and leave one held, or never run in a worker blocked in C, and the parent then joins
    that worker forever. A worker ended mid-synthesis leaves its temporary files (Festival's
    batch folder) in the scratch folder, which is removed here once every worker has ended.
    """
    scratch = tempfile.mkdtemp(prefix="lipstream-corpus-")
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_enter_worker, initargs=(scratch,)) as pool:
            yield pool
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _enter_worker(scratch: str) -> None:
    # Ctrl-C reaches every process of the terminal's group, and the pool ends its workers with
    # SIGTERM; with the CLI's handlers (fork copies them) each worker printed a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    tempfile.tempdir = scratch  # this process's temporary files
    os.environ["TMPDIR"] = scratch  # and the speech engines' it starts


def build_pool(split: str, seed: int, count: int, workers: int, augment: bool = True,
               source: UtteranceSource = corpus_source) -> list[Example]:
    """`count` utterances; the same for the same seed however many workers run."""
    sizes = [min(CHUNK_UTTERANCES, count - i) for i in range(0, count, CHUNK_UTTERANCES)]
    tasks = [(source, split, seed * 100_003 + i, n, augment) for i, n in enumerate(sizes)]
    if workers <= 1:
        chunks = [_chunk(t) for t in tasks]
    else:
        with worker_pool(workers) as pool:
            chunks = []
            for chunk in pool.imap(_chunk, tasks):
                chunks.append(chunk)
                # the utterances made, not tasks x task size: the last task is smaller
                log.info("pool %s: %d/%d utterances", split, sum(map(len, chunks)), count)
    return [ex for chunk in chunks for ex in chunk]


def mel_statistics(pool: list[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std over every frame of the pool: (N_MELS,), (N_MELS,) float32."""
    frames = np.concatenate([ex.mel for ex in pool]).astype(np.float64)
    return frames.mean(axis=0).astype(np.float32), frames.std(axis=0).astype(np.float32)


def summarize(pool: list[Example]) -> dict[str, Any]:
    frames = sum(len(ex.mel) for ex in pool)
    return {
        "utterances": len(pool),
        "hours": round(frames / MEL_FRAMES_PER_SECOND / 3600, 3),
        "engines": sorted({ex.engine for ex in pool}),
        "voices": sorted({f"{ex.engine}:{ex.voice}" for ex in pool}),
        "languages": sorted({ex.language for ex in pool}),
    }


NOISE_KINDS = ("broadband", "breath", "hum", "blown", "pops", "clicks", "swell", "mixture")


def noise_bank(seed: int, count: int = 240, seconds: float = 3.0) -> list[np.ndarray]:
    """Log-mel of speech-free sounds a microphone hears, (T, N_MELS) each, `count` of them.

    Crops of these train the mouth to stay at rest when nobody speaks; mixed under speech they
    add background noise on top of the corpus's own augmentation. Kinds take turns (NOISE_KINDS):
    steady hiss and rumble, breaths, mains hum, air blown onto the microphone (swelling noise
    below ~1 kHz), wind pops, typing clicks, and mixtures; bands, colours, swells and levels
    are drawn at random: a bank of a few fixed shapes teaches the model those shapes, not "no
    speech". The probes that check the result (`lipstream.training.quiet`) are drawn apart.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    bank = []
    for i in range(count):
        sound = _noise(NOISE_KINDS[i % len(NOISE_KINDS)], n, rng)
        level_db = rng.uniform(-75, -25)  # RMS re full scale
        sound *= 10 ** (level_db / 20) / max(rms(sound), 1e-12)
        bank.append(log_mel(sound.astype(np.float32)).astype(np.float16))
    return bank


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One unscaled sound of `kind`, n samples at 16 kHz."""
    t = np.arange(n) / SAMPLE_RATE
    if kind == "mixture":
        a, b = (_noise(str(k), n, rng) for k in rng.choice(NOISE_KINDS[:-1], 2, replace=False))
        return a / max(rms(a), 1e-12) + b / max(rms(b), 1e-12) * rng.uniform(0.1, 1)
    if kind == "hum":  # mains hum with random harmonic weights, sometimes over hiss
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        sound = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0, 1) / k
                    for k in range(1, int(rng.integers(2, 9))))
        return sound + _coloured(n, 20, SAMPLE_RATE / 2, rng) * rng.uniform(0, 0.5) * rms(sound)
    if kind == "pops":  # wind pops: short low bursts
        sound = np.zeros(n)
        for _ in range(int(rng.integers(1, 6))):
            length = int(rng.uniform(0.04, 0.3) * SAMPLE_RATE)
            at = int(rng.integers(n - length))
            sound[at : at + length] += _coloured(length, 0, rng.uniform(150, 800), rng) * np.hanning(length)
        return sound
    if kind == "clicks":  # typing, tapping: decaying broadband clicks
        sound = np.zeros(n)
        decay = np.exp(-np.arange(400) / rng.uniform(4, 40))
        for at in rng.integers(0, n - 400, int(rng.uniform(1, 12) * n / SAMPLE_RATE)):
            sound[at : at + 400] += rng.standard_normal(400) * decay * rng.uniform(0.2, 1)
        return sound + _coloured(n, 20, SAMPLE_RATE / 2, rng) * 1e-3 * rms(sound)
    if kind == "breath":
        low = rng.uniform(100, 1500)
        sound = _coloured(n, low, rng.uniform(low * 1.5, SAMPLE_RATE / 2), rng)
    elif kind == "blown":  # air onto the capsule, rumble: most energy below ~1 kHz
        sound = _coloured(n, rng.uniform(0, 80), np.exp(rng.uniform(np.log(150), np.log(1500))), rng)
    else:  # broadband or swell
        sound = _coloured(n, rng.uniform(20, 600), rng.uniform(800, SAMPLE_RATE / 2), rng)
    if kind in ("breath", "swell") or (kind == "blown" and rng.random() < 0.7):
        sound *= np.sin(np.pi * t * rng.uniform(0.3, 2.0) + rng.uniform(0, np.pi)) ** 2
    return sound


def _coloured(n: int, low_hz: float, high_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise between two corners of random steepness, white .. brown in slope."""
    hz = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 1.0)
    order = rng.choice([2, 4, 8])
    band = 1 / (1 + (low_hz / hz) ** order) / (1 + (hz / high_hz) ** order)
    slope = np.maximum(hz, 20.0) ** (-rng.uniform(0, 1))
    sound = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * band * slope, n)
    return sound / max(rms(sound), 1e-12)


@dataclass(frozen=True)
class Batch:
    mel: np.ndarray  # (B, L, N_MELS) float32
    controls: np.ndarray  # (B, L, N_CONTROLS) float32, for the frames the outputs belong to
    visemes: np.ndarray  # (B, L) int64


class CropSampler:
    """Random crops of `crop_frames` mel frames with their targets.

    Crops may hang over either end of an utterance into digital silence (the floor value the
    engine's stream holds before audio starts), whose targets are rest and `sil`: that teaches
    the edges of a stream. A random level offset (in log10 power) makes loudness uninformative.
    """

    def __init__(self, pool: list[Example], crop_frames: int, seed: int,
                 noise: list[np.ndarray] | None = None, overhang_frames: int = 50,
                 level_range: tuple[float, float] = (-1.5, 1.0),
                 noise_only: float = 0.3, noise_under: float = 0.3,
                 warp_range: tuple[float, float] = (0.82, 1.22), freq_masks: int = 2) -> None:
        self.pool, self.crop_frames, self.overhang = pool, crop_frames, overhang_frames
        self.level_range, self.warp_range, self.freq_masks = level_range, warp_range, freq_masks
        bank = mel_filterbank()  # (n_fft bins, N_MELS)
        self._centre_hz = (bank * np.arange(len(bank))[:, None]).sum(0) / bank.sum(0)  # in FFT bins
        self.noise = noise or []
        self.noise_only, self.noise_under = noise_only, noise_under  # probabilities per crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> Batch:
        crops = [self._crop(self.pool[int(self.rng.integers(len(self.pool)))]) for _ in range(size)]
        return Batch(*(np.stack(parts) for parts in zip(*crops, strict=True)))

    def _crop(self, ex: Example) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, length = len(ex.mel), self.crop_frames
        start = int(self.rng.integers(-self.overhang, max(n - length + self.overhang, -self.overhang + 1)))
        mel = np.full((length, ex.mel.shape[1]), SILENCE_LOG_MEL, np.float32)
        controls = np.zeros((length, ex.controls.shape[1]), np.float32)
        visemes = np.zeros(length, np.int64)  # 0 = sil
        lo, hi = max(start, 0), min(start + length, n)
        if hi > lo:
            mel[lo - start : hi - start] = ex.mel[lo:hi]
            controls[lo - start : hi - start] = ex.controls[lo:hi]
            visemes[lo - start : hi - start] = ex.visemes[lo:hi]
        if self.noise and self.rng.random() < self.noise_only:
            mel[:] = SILENCE_LOG_MEL
            controls[:], visemes[:] = 0.0, 0
        mel = self._warp(mel)
        sound = mel > SILENCE_LOG_MEL + 1e-3  # digital silence stays at the floor at any gain
        mel[sound] = np.maximum(mel[sound] + self.rng.uniform(*self.level_range), SILENCE_LOG_MEL)
        if self.noise and (not sound.any() or self.rng.random() < self.noise_under):
            mel = self._add_noise(mel)
        return mel, controls, visemes

    def _warp(self, mel: np.ndarray) -> np.ndarray:
        """Scale the frequency axis (vocal tract length: a child's formants sit ~20% above a man's)
        and blank a few random bands, so the model keys on patterns, not on one speaker's formants."""
        alpha = np.exp(self.rng.uniform(*np.log(self.warp_range)))
        idx = np.interp(self._centre_hz / alpha, self._centre_hz, np.arange(mel.shape[1]))
        lo = np.minimum(idx.astype(np.int64), mel.shape[1] - 2)
        w = (idx - lo).astype(np.float32)
        out = mel[:, lo] * (1 - w) + mel[:, lo + 1] * w
        for _ in range(int(self.rng.integers(self.freq_masks + 1))):
            start, width = int(self.rng.integers(mel.shape[1] - 8)), int(self.rng.integers(1, 9))
            out[:, start : start + width] = out[:, start : start + width].mean(axis=0)
        return out.astype(np.float32)

    def _add_noise(self, mel: np.ndarray) -> np.ndarray:
        """Power-add a noise recording (random level) to the crop: log10(10^mel + 10^noise)."""
        noise = self.noise[int(self.rng.integers(len(self.noise)))].astype(np.float32)
        start = int(self.rng.integers(max(len(noise) - len(mel), 0) + 1))
        noise = np.resize(noise[start:], mel.shape) + self.rng.uniform(-1.0, 1.0)
        return np.logaddexp(mel * np.log(10), noise * np.log(10)).astype(np.float32) / np.float32(np.log(10))
