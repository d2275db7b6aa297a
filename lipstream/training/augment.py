"""What a microphone, a room and a WebRTC link do to speech, applied to clean synthetic speech.

Each step is a pure function of (audio, rng); `augment_speech` chains them in the order they happen
(speaker tempo, vocal-tract length, pitch, pauses and breaths, room echo, room noise, microphone EQ,
gain and clipping, Opus). Only the tempo change and the pauses move the phones; every other step keeps
the length and the alignment (the reverb is causal, the Opus codec delay is removed, the spectral
warps keep every STFT frame where it was), so the labels stay valid.
"""

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lipstream.engine.audio import rms
from lipstream.engine.constants import SAMPLE_RATE, exact_div
from lipstream.training.tts import SILENCE_LABEL, Phone

OPUS_RATE_HZ = 48_000
OPUS_UPSAMPLE = exact_div(OPUS_RATE_HZ, SAMPLE_RATE)  # 3
OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, WebRTC's usual packet
OPUS_DELAY_SAMPLES = 312  # libopus encoder look-ahead at 48 kHz (its pre-skip), measured with PyAV
STFT_SAMPLES = 512  # 32 ms: resolves harmonics down to a ~60 Hz voice
STFT_HOP_SAMPLES = exact_div(STFT_SAMPLES, 4)  # 8 ms, 75% overlap
ENVELOPE_LIFTER_S = 0.0016  # cepstral cut-off below the pitch period of a 600 Hz voice (1.7 ms)
ENVELOPE_LIFTER_SAMPLES = round(ENVELOPE_LIFTER_S * SAMPLE_RATE)  # 26 quefrency bins
SEMITONES_PER_OCTAVE = 12


@dataclass(frozen=True)
class AugmentConfig:
    p_speed: float = 0.5
    speed_range: tuple[float, float] = (0.85, 1.15)  # > 1 is faster (and higher, like a tape)
    p_pause: float = 0.5
    pause_s: tuple[float, float] = (0.1, 0.8)
    p_breath: float = 0.5  # of a pause, how often it holds an audible breath
    p_reverb: float = 0.4
    rt60_s: tuple[float, float] = (0.1, 0.6)
    p_noise: float = 0.75
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_eq: float = 0.5
    p_telephone: float = 0.3  # of the EQ draws, how often it is a 300-3400 Hz band
    gain_db: tuple[float, float] = (-20.0, 6.0)
    p_opus: float = 0.3
    opus_kbps: tuple[int, int] = (16, 32)
    # A speaker's voice (off by default, so that the shipped model's run replays exactly):
    # formants scaled by alpha with pitch and timing kept, the vocal-tract-length perturbation of ASR
    p_vtlp: float = 0.0
    vtlp_alpha: tuple[float, float] = (0.85, 1.15)  # > 1: higher formants, a shorter vocal tract
    # and pitch moved with formants and timing kept
    p_pitch: float = 0.0
    pitch_semitones: tuple[float, float] = (-4.0, 4.0)


DEFAULT_AUGMENT = AugmentConfig()


def change_speed(
    audio: np.ndarray, phones: tuple[Phone, ...], factor: float
) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """Play faster (factor > 1) or slower by resampling: duration / factor, pitch * factor."""
    from scipy.signal import resample_poly

    ratio = Fraction(1 / factor).limit_denominator(50)  # output samples per input sample
    out = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
    scale = out.size / max(audio.size, 1)
    scaled = tuple(Phone(p.label, p.start_s * scale, p.end_s * scale) for p in phones)
    return out, scaled


def warp_formants(audio: np.ndarray, alpha: float) -> np.ndarray:
    """Vocal-tract length: the spectral envelope scaled along frequency by alpha (a formant at F
    moves to alpha * F); harmonics (the pitch), phase and timing stay. Same length and level."""
    spectrum = _stft(audio)
    magnitude = np.abs(spectrum)
    envelope = _spectral_envelope(magnitude)
    warped = magnitude / envelope * _warp_bins(envelope, alpha)
    return _istft(warped * np.exp(1j * np.angle(spectrum)), audio)


def shift_pitch(audio: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch moved by `semitones` with the formants and timing kept: a phase vocoder moves each
    frame's harmonics up or down the bins, then the original envelope is put back. Same length."""
    ratio = 2 ** (semitones / SEMITONES_PER_OCTAVE)
    spectrum = _stft(audio)
    magnitude = np.abs(spectrum)
    envelope = _spectral_envelope(magnitude)
    fine = _warp_bins(magnitude / envelope, ratio)
    return _istft(fine * envelope * np.exp(1j * _shifted_phase(spectrum, ratio)), audio)


def _stft(audio: np.ndarray) -> np.ndarray:
    from scipy.signal import stft

    return stft(audio, nperseg=STFT_SAMPLES, noverlap=STFT_SAMPLES - STFT_HOP_SAMPLES)[2]  # (bins, frames)


def _istft(spectrum: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Back to samples, cut or padded to `like`'s length and scaled to its rms."""
    from scipy.signal import istft

    out = istft(spectrum, nperseg=STFT_SAMPLES, noverlap=STFT_SAMPLES - STFT_HOP_SAMPLES)[1][: like.size]
    out = np.pad(out, (0, like.size - out.size))
    return (out * rms(like) / max(rms(out), 1e-12)).astype(np.float32)


def _spectral_envelope(magnitude: np.ndarray) -> np.ndarray:
    """Each frame's smooth envelope (bins, frames): the low quefrencies of its log magnitude."""
    cepstrum = np.fft.irfft(np.log(magnitude + 1e-9), axis=0)
    cepstrum[ENVELOPE_LIFTER_SAMPLES : cepstrum.shape[0] - ENVELOPE_LIFTER_SAMPLES + 1] = 0.0
    return np.exp(np.fft.rfft(cepstrum, axis=0).real[: magnitude.shape[0]])


def _warp_bins(values: np.ndarray, factor: float) -> np.ndarray:
    """(bins, frames) resampled along frequency so that bin k's value lands at bin factor * k."""
    bins = np.arange(values.shape[0])
    source = bins / factor  # past the top bin, np.interp holds the last value
    return np.stack([np.interp(source, bins, column) for column in values.T], axis=1)


def _shifted_phase(spectrum: np.ndarray, ratio: float) -> np.ndarray:
    """Phases for harmonics moved by `ratio`: each output bin advances, frame to frame, at ratio times
    the instantaneous frequency of the bin it came from (a phase vocoder; no resampling in time)."""
    n_bins = spectrum.shape[0]
    expected = 2 * np.pi * STFT_HOP_SAMPLES * np.arange(n_bins) / STFT_SAMPLES  # (bins,) per hop
    phase = np.angle(spectrum)
    deviation = np.diff(phase, axis=1, prepend=phase[:, :1]) - expected[:, None]
    advance = expected[:, None] + np.angle(np.exp(1j * deviation))  # wrapped to +-pi
    source = np.clip(np.round(np.arange(n_bins) / ratio).astype(int), 0, n_bins - 1)
    return phase[source, :1] + np.cumsum(ratio * advance[source], axis=1) - ratio * advance[source, :1]


def breath_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """An inhalation: band-limited noise (500-3000 Hz) under a smooth swell, unit peak."""
    from scipy.signal import butter, sosfilt

    sos = butter(2, [500, 3000], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n)) * np.hanning(n)
    return (noise / max(np.abs(noise).max(), 1e-9)).astype(np.float32)


def add_pauses(
    audio: np.ndarray, phones: tuple[Phone, ...], phoneset: str, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """Silence (sometimes a breath) before and after the utterance, labelled as silence."""
    lead_s, tail_s = rng.uniform(*cfg.pause_s, size=2)
    lead, tail = int(lead_s * SAMPLE_RATE), int(tail_s * SAMPLE_RATE)
    pad_lead, pad_tail = np.zeros(lead, np.float32), np.zeros(tail, np.float32)
    if rng.random() < cfg.p_breath and lead > SAMPLE_RATE // 10:
        level = rms(audio) * 10 ** (rng.uniform(-30, -12) / 20) * 3  # peak ~3x rms
        n = int(lead * rng.uniform(0.4, 0.8))
        pad_lead[:n] = breath_noise(n, rng) * level
    silence = SILENCE_LABEL[phoneset]
    offset = lead / SAMPLE_RATE
    shifted = [Phone(p.label, p.start_s + offset, p.end_s + offset) for p in phones]
    end_s = offset + audio.size / SAMPLE_RATE
    out_phones = (Phone(silence, 0.0, offset), *shifted, Phone(silence, end_s, end_s + tail / SAMPLE_RATE))
    return np.concatenate([pad_lead, audio, pad_tail]), out_phones


def reverberate(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A room: the direct sound plus exponentially decaying noise (60 dB down after rt60_s); causal."""
    from scipy.signal import fftconvolve

    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)  # ln(1000) = 6.91: -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive a few ms after the direct sound
    impulse = tail * 10 ** (rng.uniform(-8, 0) / 20) / max(np.sqrt(np.sum(tail**2)), 1e-9)
    impulse[0] = 1.0
    wet = fftconvolve(audio, impulse)[: audio.size]
    return (wet * rms(audio) / max(rms(wet), 1e-9)).astype(np.float32)


def coloured_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-rms white, pink (1/f) or brown (1/f^2) noise."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n)
    return (white / max(rms(white), 1e-12)).astype(np.float32)


def babble(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-rms babble: time-reversed, shifted copies of the speech (its spectrum, no words)."""
    reversed_speech = audio[::-1]
    mix = sum(np.roll(reversed_speech, int(rng.integers(0, max(audio.size, 1)))) for _ in range(3))
    mix = np.asarray(mix, dtype=np.float32)
    return mix / max(rms(mix), 1e-12)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    kind = ("white", "pink", "brown", "babble")[int(rng.integers(0, 4))]
    noise = babble(audio, rng) if kind == "babble" else coloured_noise(audio.size, kind, rng)
    return (audio + noise * rms(audio) * 10 ** (-snr_db / 20)).astype(np.float32)


def equalize(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """A microphone's colour: a telephone band, or random low and high shelves."""
    from scipy.signal import butter, sosfilt

    if rng.random() < cfg.p_telephone:
        sos = butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        return sosfilt(sos, audio).astype(np.float32)
    low = sosfilt(butter(1, rng.uniform(100, 400), fs=SAMPLE_RATE, output="sos"), audio)
    high = sosfilt(butter(1, rng.uniform(2000, 6000), btype="highpass", fs=SAMPLE_RATE, output="sos"), audio)
    low_gain, high_gain = 10 ** (rng.uniform(-12, 6, size=2) / 20)
    return (audio + (low_gain - 1) * low + (high_gain - 1) * high).astype(np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Level change, then the converter's clipping at full scale."""
    return np.clip(audio * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def opus_round_trip(audio: np.ndarray, bitrate_bps: int) -> np.ndarray:
    """Encode and decode through libopus at 48 kHz (as WebRTC does); same length and alignment back."""
    import av
    from scipy.signal import resample_poly

    pcm48 = resample_poly(audio, OPUS_UPSAMPLE, 1)
    pcm = (np.clip(pcm48, -1, 1) * 32767).astype(np.int16)
    pcm = np.concatenate([pcm, np.zeros((-pcm.size) % OPUS_FRAME_SAMPLES + 2 * OPUS_FRAME_SAMPLES, np.int16)])
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = OPUS_RATE_HZ, "mono", "s16"
    encoder.bit_rate = bitrate_bps
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = OPUS_RATE_HZ, "mono"
    decoded: list[np.ndarray] = []
    for start in range(0, pcm.size + 1, OPUS_FRAME_SAMPLES):
        frame = None
        if start < pcm.size:
            frame = av.AudioFrame.from_ndarray(
                pcm[None, start : start + OPUS_FRAME_SAMPLES], format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = OPUS_RATE_HZ, start
        for packet in encoder.encode(frame):
            decoded += [f.to_ndarray().reshape(-1) for f in decoder.decode(packet)]
    out48 = np.concatenate(decoded)[OPUS_DELAY_SAMPLES : OPUS_DELAY_SAMPLES + pcm48.size]
    out = resample_poly(out48, 1, OPUS_UPSAMPLE)[: audio.size]
    return np.pad(out, (0, audio.size - out.size)).astype(np.float32)


def augment_speech(
    audio: np.ndarray,
    phones: tuple[Phone, ...],
    phoneset: str,
    rng: np.random.Generator,
    cfg: AugmentConfig = DEFAULT_AUGMENT,
) -> tuple[np.ndarray, tuple[Phone, ...]]:
    """The whole chain; each step is drawn with its probability. Deterministic given rng's state."""
    if rng.random() < cfg.p_speed:
        audio, phones = change_speed(audio, phones, rng.uniform(*cfg.speed_range))
    # `p and`: a step switched off draws nothing, so the rest of the chain replays as before it existed
    if cfg.p_vtlp and rng.random() < cfg.p_vtlp:
        audio = warp_formants(audio, rng.uniform(*cfg.vtlp_alpha))
    if cfg.p_pitch and rng.random() < cfg.p_pitch:
        audio = shift_pitch(audio, rng.uniform(*cfg.pitch_semitones))
    if rng.random() < cfg.p_pause:
        audio, phones = add_pauses(audio, phones, phoneset, rng, cfg)
    if rng.random() < cfg.p_reverb:
        audio = reverberate(audio, rng.uniform(*cfg.rt60_s), rng)
    if rng.random() < cfg.p_noise:
        audio = add_noise(audio, rng.uniform(*cfg.snr_db), rng)
    if rng.random() < cfg.p_eq:
        audio = equalize(audio, rng, cfg)
    audio = apply_gain(audio, rng.uniform(*cfg.gain_db) + _normalizing_gain_db(audio))
    if rng.random() < cfg.p_opus:
        audio = opus_round_trip(audio, int(rng.integers(cfg.opus_kbps[0], cfg.opus_kbps[1] + 1)) * 1000)
    return np.clip(audio, -1.0, 1.0), phones  # the decoder can overshoot full scale slightly


def _normalizing_gain_db(audio: np.ndarray, target_dbfs: float = -20.0) -> float:
    # Engines differ by 10+ dB; bring speech to a typical mic level before the random gain.
    return target_dbfs - 20 * np.log10(max(rms(audio), 1e-6))
