"""Sounds a microphone picks up when nobody speaks: the probes that check the mouth stays at rest.

Each probe is a named, seeded signal at a stated level (RMS re full scale). They are drawn apart
from training's noise bank (`features.noise_bank`, random shapes) so a model that rests here
has learned "no speech", not the bank's shapes. Used by training validation, by the tests of
the shipped model and by `benchmarks/rest.py`.
"""

from collections.abc import Callable

import numpy as np

from lipstream.engine.audio import rms
from lipstream.engine.constants import SAMPLE_RATE


def scaled(sound: np.ndarray, rms_dbfs: float) -> np.ndarray:
    """`sound` at an RMS of `rms_dbfs` re full scale, float32."""
    return (sound * (10 ** (rms_dbfs / 20) / max(rms(sound), 1e-12))).astype(np.float32)


def band_noise(n: int, low_hz: float, high_hz: float, rng: np.random.Generator) -> np.ndarray:
    """White noise kept between `low_hz` and `high_hz` (brick-wall), unscaled."""
    hz = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * ((hz >= low_hz) & (hz <= high_hz)), n)


def swells(n: int, count: float) -> np.ndarray:
    """`count` smooth rises and falls over n samples (sin^2), like breaths."""
    return np.sin(np.pi * np.arange(n) / n * count) ** 2


def swelling_noise(low_hz: float, high_hz: float, rms_dbfs: float, seed: int = 1,
                   seconds: float = 2.0) -> np.ndarray:
    """Band noise in two swells: breaths near the microphone (400-3500 Hz) or blown onto it (< 1 kHz)."""
    n = int(seconds * SAMPLE_RATE)
    return scaled(band_noise(n, low_hz, high_hz, np.random.default_rng(seed)) * swells(n, 2), rms_dbfs)


def pops(rms_dbfs: float, seed: int = 3, seconds: float = 2.0) -> np.ndarray:
    """Wind pops: short (60-200 ms) bursts below 300 Hz at random moments."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    for _ in range(4):
        length = int(rng.uniform(0.06, 0.2) * SAMPLE_RATE)
        start = int(rng.integers(n - length))
        out[start : start + length] += band_noise(length, 0, 300, rng) * np.hanning(length)
    return scaled(out, rms_dbfs)


def clicks(rms_dbfs: float, seed: int = 4, seconds: float = 2.0) -> np.ndarray:
    """Typing: broadband clicks (a few ms, decaying) about eight times a second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    decay = np.exp(-np.arange(80) / 12.0)
    for start in rng.integers(0, n - 80, int(8 * seconds)):
        out[start : start + 80] += rng.standard_normal(80) * decay * rng.uniform(0.3, 1)
    return scaled(out, rms_dbfs)


def hum(rms_dbfs: float, mains_hz: float = 50.0, seconds: float = 2.0) -> np.ndarray:
    """Mains hum with its first five harmonics."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return scaled(sum(np.sin(2 * np.pi * mains_hz * k * t) / k for k in range(1, 6)), rms_dbfs)


def fan(rms_dbfs: float, seed: int = 5, seconds: float = 2.0) -> np.ndarray:
    """Steady pink noise (a fan, an air conditioner)."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0))
    return scaled(np.fft.irfft(spectrum, n), rms_dbfs)


REST_LIMIT = 0.15  # a displayed control at or above this while nobody speaks is a visible movement
PROBES: dict[str, Callable[[], np.ndarray]] = {
    "silence": lambda: np.zeros(2 * SAMPLE_RATE, np.float32),
    "hiss -60 dBFS": lambda: scaled(np.random.default_rng(2).standard_normal(2 * SAMPLE_RATE), -60),
    "fan -40 dBFS": lambda: fan(-40),
    "hum 50 Hz -40 dBFS": lambda: hum(-40),
    "breath 400-3500 Hz -50 dBFS": lambda: swelling_noise(400, 3500, -50),
    "breath 400-3500 Hz -35 dBFS": lambda: swelling_noise(400, 3500, -35),
    "blown 0-1000 Hz -60 dBFS": lambda: swelling_noise(0, 1000, -60),
    "blown 0-1000 Hz -40 dBFS": lambda: swelling_noise(0, 1000, -40),
    "rumble 0-300 Hz -40 dBFS": lambda: swelling_noise(0, 300, -40),
    "wind pops -30 dBFS": lambda: pops(-30),
    "typing -40 dBFS": lambda: clicks(-40),
}
