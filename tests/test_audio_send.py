"""The server's outgoing audio: each 20 ms chunk straight from float PCM to one Opus packet
(libopus through ctypes, no PyAV frame), at a complexity chosen by an objective distance."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.measure.opus_quality import encoder_distance_db, mel_distance_db, round_trip, whole_chunks
from lipstream.streaming import opus
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES
from lipstream.streaming.opus import OPUS_APPLICATION_VOIP, OpusEncoder, OpusError
from lipstream.streaming.tracks import OpusChunkEncoder

OPUS_LOOKAHEAD_SAMPLES = 104  # 6.5 ms at 16 kHz in VoIP mode
LOW_DELAY_LOOKAHEAD_SAMPLES = 40  # 2.5 ms in restricted low-delay mode, what the server sends
BROWSER_BITRATE = 32_000  # bit/s: Chromium's microphone


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    return load_audio(speech_wav)


def test_a_chunk_of_pcm_becomes_one_packet_stamped_earlier_by_the_lookahead(speech: np.ndarray) -> None:
    encode = OpusChunkEncoder()
    pts = 7 * AUDIO_CHUNK_SAMPLES
    packet = encode(speech[pts : pts + AUDIO_CHUNK_SAMPLES], pts)  # the engine's float32, as it is
    assert isinstance(packet, av.Packet)
    assert packet.pts == pts - LOW_DELAY_LOOKAHEAD_SAMPLES and packet.time_base == Fraction(1, SAMPLE_RATE)
    assert encode.lookahead_s == LOW_DELAY_LOOKAHEAD_SAMPLES / SAMPLE_RATE  # known before the first chunk


def test_the_sent_packets_decode_to_the_speech(speech: np.ndarray) -> None:
    pieces = whole_chunks(speech)
    decoded = round_trip(OpusChunkEncoder(), pieces)
    assert decoded.size == speech.size // AUDIO_CHUNK_SAMPLES * AUDIO_CHUNK_SAMPLES
    assert mel_distance_db(decoded, pieces.reshape(-1)) < 2.2
    silence = round_trip(OpusChunkEncoder(), np.zeros((10, AUDIO_CHUNK_SAMPLES), np.float32))
    assert np.abs(silence).max() < 1e-3


def test_the_cheaper_encoding_stays_nearer_the_speech_than_a_browser_microphone(speech: np.ndarray) -> None:
    """The setting's justification, kept true: low-delay mode at complexity 3 moves the speech less
    than the 32 kbit/s every browser sends, and no more than what the server sent before it (VoIP
    mode at complexity 5, 48 kbit/s)."""
    sent = encoder_distance_db(OpusChunkEncoder(), speech)
    before = encoder_distance_db(
        OpusChunkEncoder(bitrate=48_000, complexity=5, application=OPUS_APPLICATION_VOIP), speech)
    browser = encoder_distance_db(
        OpusChunkEncoder(bitrate=BROWSER_BITRATE, complexity=10, application=OPUS_APPLICATION_VOIP), speech)
    assert sent < before < browser, (sent, before, browser)


def test_the_encoder_refuses_a_complexity_libopus_does_not_have() -> None:
    with pytest.raises(OpusError, match="use 0..10"):
        OpusEncoder(complexity=11)
    assert OpusEncoder(complexity=0).lookahead_samples == OPUS_LOOKAHEAD_SAMPLES


def test_the_encoder_uses_the_libopus_pyav_brought() -> None:
    """opus.py uses the libopus PyAV's FFmpeg loaded (a newer release: less CPU per packet) rather
    than loading a second, older one from the system, where PyAV's wheel bundles one. (Other
    libraries may map the system's for their own use, e.g. libsndfile once a test has read audio:
    so the check is which one opus.py calls, not how many the process holds.)"""
    av.CodecContext.create("libopus", "w")  # PyAV's FFmpeg, as aiortc uses it
    OpusEncoder().encode(np.zeros(AUDIO_CHUNK_SAMPLES, np.float32))
    with open("/proc/self/maps") as maps:
        bundled = {Path(line.split()[-1]) for line in maps if "libopus" in line and "av.libs" in line}
    if not bundled:
        pytest.skip("this PyAV build links a system libopus: opus.py then loads that one")
    assert {Path(opus._lib()._name).resolve()} == {path.resolve() for path in bundled}
