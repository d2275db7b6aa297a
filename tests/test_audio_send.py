"""The server's outgoing audio: each 20 ms chunk straight from float PCM to one Opus packet
(libopus through ctypes, no PyAV frame), at a complexity chosen by an objective distance."""

import asyncio
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.controls import N_CONTROLS
from lipstream.measure.opus_quality import encoder_distance_db, mel_distance_db, round_trip, whole_chunks
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES, FRAME_S, ManualClock, MediaClock
from lipstream.streaming.opus import OpusDecoder, OpusEncoder, OpusError, packet_samples
from lipstream.streaming.tracks import BLANK_I420, OpusChunkEncoder, SessionAudioTrack
from lipstream.streaming.worker import FrameRing, ReadyFrame

OPUS_LOOKAHEAD_SAMPLES = 104  # 6.5 ms at 16 kHz in VoIP mode
BROWSER_BITRATE = 32_000  # bit/s: Chromium's microphone


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    return load_audio(speech_wav)


def test_a_chunk_of_pcm_becomes_one_packet_stamped_earlier_by_the_lookahead(speech: np.ndarray) -> None:
    encode = OpusChunkEncoder()
    pts = 7 * AUDIO_CHUNK_SAMPLES
    packet = encode(speech[pts : pts + AUDIO_CHUNK_SAMPLES], pts)  # the engine's float32, as it is
    assert isinstance(packet, av.Packet)
    assert packet.pts == pts - OPUS_LOOKAHEAD_SAMPLES and packet.time_base == Fraction(1, SAMPLE_RATE)
    assert encode.lookahead_s == OPUS_LOOKAHEAD_SAMPLES / SAMPLE_RATE  # known before the first chunk


def test_the_sent_packets_decode_to_the_speech(speech: np.ndarray) -> None:
    pieces = whole_chunks(speech)
    decoded = round_trip(OpusChunkEncoder(), pieces)
    assert decoded.size == speech.size // AUDIO_CHUNK_SAMPLES * AUDIO_CHUNK_SAMPLES
    assert mel_distance_db(decoded, pieces.reshape(-1)) < 2.2
    silence = round_trip(OpusChunkEncoder(), np.zeros((10, AUDIO_CHUNK_SAMPLES), np.float32))
    assert np.abs(silence).max() < 1e-3


def test_the_cheaper_complexity_stays_nearer_the_speech_than_a_browser_microphone(speech: np.ndarray) -> None:
    """The setting's justification, kept true: complexity 5 moves the speech less than the 32 kbit/s
    every browser sends, and not much more than the best setting does."""
    sent = encoder_distance_db(OpusChunkEncoder(), speech)
    best = encoder_distance_db(OpusChunkEncoder(complexity=10), speech)
    browser = encoder_distance_db(OpusChunkEncoder(bitrate=BROWSER_BITRATE, complexity=10), speech)
    assert sent < browser and sent - best < 0.4, (sent, best, browser)


def test_the_encoder_refuses_a_complexity_libopus_does_not_have() -> None:
    with pytest.raises(OpusError, match="use 0..10"):
        OpusEncoder(complexity=11)
    assert OpusEncoder(complexity=0).lookahead_samples == OPUS_LOOKAHEAD_SAMPLES


async def _sent_packets(frames: np.ndarray) -> tuple[list[av.Packet], list[float]]:
    """A session's audio track on a manual clock, fed `frames` (n, 640): its packets, and when
    each was handed over (seconds after the media origin)."""
    clock = ManualClock()
    media = MediaClock(clock)
    ring = FrameRing(media)
    track = SessionAudioTrack(ring, media, start_index=0)
    media.start()
    packets, handed_s, frame_at = [], [], 0
    while frame_at < len(frames):
        ring.put(ReadyFrame(frame_at, frames[frame_at], BLANK_I420, np.zeros(N_CONTROLS, np.float32), None))
        frame_at += 1
        while _sent_samples(packets) < frame_at * SAMPLES_PER_VIDEO_FRAME:  # until all of it is sent
            task = asyncio.ensure_future(track.recv())
            while not task.done():
                if clock.sleepers:
                    clock.release_next()
                await asyncio.sleep(0)
            packets.append(task.result())
            handed_s.append(clock.now() - media.origin)
    return packets, handed_s


def _sent_samples(packets: list[av.Packet]) -> int:
    """How much of the input the packets so far cover, in samples."""
    return packets[-1].pts + OPUS_LOOKAHEAD_SAMPLES + packet_samples(bytes(packets[-1])) if packets else 0


def test_each_frame_s_audio_leaves_as_one_40_ms_packet_with_the_frame(speech: np.ndarray) -> None:
    """Half the packets of 20 ms ones (RTP, SRTP, sendto, timer wake-ups on the event loop)."""
    frames = whole_chunks(speech, SAMPLES_PER_VIDEO_FRAME)[:50]
    packets, handed_s = asyncio.run(_sent_packets(frames))
    n = np.arange(len(frames))
    assert [p.pts for p in packets] == list(n * SAMPLES_PER_VIDEO_FRAME - OPUS_LOOKAHEAD_SAMPLES)
    due_s = np.maximum(n * FRAME_S - OPUS_LOOKAHEAD_SAMPLES / SAMPLE_RATE, 0)  # none before the start
    np.testing.assert_allclose(handed_s, due_s, atol=1e-9)
    decoder = OpusDecoder()
    decoded = [decoder.decode(bytes(p)) for p in packets]
    assert {d.size for d in decoded} == {SAMPLES_PER_VIDEO_FRAME}
    assert mel_distance_db(np.concatenate(decoded), frames.reshape(-1)) < 2.2
