"""How far Opus moves speech: the log-mel distance between a chunk encoder's decoded output and
its input, a listening-free check for choosing an encoder setting (complexity, bit rate)."""

from collections.abc import Callable

import av
import numpy as np

from lipstream.engine.mel import log_mel
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES
from lipstream.streaming.opus import OpusDecoder

DB_PER_LOG10 = 10.0  # log_mel is log10 of power
ALIGN_SEARCH_SAMPLES = 1000  # longer than any encoder's lookahead (6.5 ms = 104 samples)

ChunkEncode = Callable[[np.ndarray, int], av.Packet | av.AudioFrame]


def whole_chunks(pcm: np.ndarray, samples: int = AUDIO_CHUNK_SAMPLES) -> np.ndarray:
    """(n, samples): `pcm` (16 kHz) cut into whole chunks (20 ms unless told), the rest dropped."""
    n = pcm.size // samples
    return pcm[: n * samples].reshape(n, samples)


def round_trip(encode: ChunkEncode, pieces: np.ndarray) -> np.ndarray:
    """Each chunk through `encode` (which must make Opus packets) and back through libopus."""
    decoder, out = OpusDecoder(), []
    for k, piece in enumerate(pieces):
        packet = encode(piece, k * piece.size)
        if not isinstance(packet, av.Packet):
            raise TypeError(f"{type(encode).__name__} made {type(packet).__name__}, not Opus packets")
        out.append(decoder.decode(bytes(packet)))
    return np.concatenate(out)


def mel_distance_db(decoded: np.ndarray, source: np.ndarray) -> float:
    """Mean |log-mel difference| in dB (80 bins x 10 ms hops), after lining `decoded` up with
    `source` (the codec's delay found by cross-correlation)."""
    head = source[: source.size - ALIGN_SEARCH_SAMPLES]
    delay = int(np.argmax(np.correlate(decoded[: source.size], head, "valid")))
    n = min(source.size, decoded.size - delay)
    return float(np.mean(np.abs(log_mel(decoded[delay : delay + n]) - log_mel(source[:n])))) * DB_PER_LOG10


def encoder_distance_db(encode: ChunkEncode, pcm: np.ndarray, samples: int = AUDIO_CHUNK_SAMPLES) -> float:
    pieces = whole_chunks(pcm, samples)
    return mel_distance_db(round_trip(encode, pieces), pieces.reshape(-1))
