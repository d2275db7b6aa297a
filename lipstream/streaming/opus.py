"""libopus through ctypes: decode straight to 16 kHz mono, with in-band FEC and loss concealment.

Decoding at the engine's rate inside libopus needs no resampler (and none of its start-up
latency); `decode_fec` and NULL-data PLC are what a receive path needs on a lost packet and what
aiortc's decoder does not expose. The encoder makes the server's outgoing Opus (a packet straight
from float PCM, no PyAV frame) and the FEC-bearing Opus that tests need.
"""

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache
from pathlib import Path

import av
import numpy as np

from lipstream.engine.constants import SAMPLE_RATE

OPUS_CLOCK_RATE = 48_000  # RTP clock of Opus, whatever rate was encoded
RTP_TICKS_PER_SAMPLE = OPUS_CLOCK_RATE // SAMPLE_RATE  # 3 at 16 kHz
MAX_PACKET_MS = 120  # the longest Opus packet
MAX_PACKET_SAMPLES = SAMPLE_RATE * MAX_PACKET_MS // 1000
MAX_ENCODED_BYTES = 1500  # one MTU
OPUS_APPLICATION_VOIP = 2048  # SILK or hybrid: speech at low rates, in-band FEC
OPUS_APPLICATION_RESTRICTED_LOWDELAY = 2051  # CELT only: less lookahead, no FEC, cheaper at speech rates
OPUS_SET_BITRATE_REQUEST = 4002
OPUS_SET_INBAND_FEC_REQUEST = 4012
OPUS_SET_PACKET_LOSS_PERC_REQUEST = 4014
OPUS_SET_COMPLEXITY_REQUEST = 4010
OPUS_GET_LOOKAHEAD_REQUEST = 4027
LIBOPUS_DEFAULT_COMPLEXITY = 9  # what opus_encoder_create sets (0: cheapest .. 10: best)


class OpusError(RuntimeError):
    """libopus is missing or refused a call."""


def _library_path() -> str | None:
    """The libopus that PyAV's wheel bundles (and has loaded already), else the system's.

    The bundled one is a newer release (1.6 beside Debian 12's 1.3) and encodes a 20 ms speech
    packet in ~0.7x the CPU: it runs 50 times a second per session on the server's event loop.
    """
    bundled = sorted(Path(av.__file__).resolve().parent.parent.glob("av.libs/libopus*.so*"))
    return str(bundled[0]) if bundled else ctypes.util.find_library("opus")


@cache
def _lib() -> ctypes.CDLL:
    name = _library_path()
    if name is None:
        raise OpusError("libopus not found: install the system package libopus0")
    lib = ctypes.CDLL(name)
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decode_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                                      ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int]
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_int)]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encode_float.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int,
                                      ctypes.c_char_p, ctypes.c_int32]
    lib.opus_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32]
    return lib


@cache
def _encoder_get() -> Callable[..., int]:
    """opus_encoder_ctl typed for the requests that write an int back (it is variadic)."""
    prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int32))
    get: Callable[..., int] = prototype(("opus_encoder_ctl", _lib()))
    return get


def packet_samples(payload: bytes) -> int:
    """Samples at 16 kHz that one Opus packet decodes to; 0 if it is not valid Opus."""
    return max(int(_lib().opus_packet_get_nb_samples(payload, len(payload), SAMPLE_RATE)), 0)


class OpusDecoder:
    """One stream's decoder state: 16 kHz mono float32 out."""

    def __init__(self) -> None:
        error = ctypes.c_int(0)
        self._state = _lib().opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        if not self._state or error.value != 0:
            raise OpusError(f"opus_decoder_create failed ({error.value})")
        self._pcm = (ctypes.c_float * MAX_PACKET_SAMPLES)()

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            _lib().opus_decoder_destroy(self._state)

    def decode(self, payload: bytes) -> np.ndarray:
        """A received packet; a corrupt one is concealed, like a lost one of the same length."""
        samples = packet_samples(payload)
        return self._run(payload, samples, fec=False) if samples else self.conceal(0)

    def recover(self, next_payload: bytes, samples: int) -> np.ndarray:
        """The lost packet before `next_payload`, from the redundancy it carries (else PLC)."""
        return self._run(next_payload, samples, fec=True)

    def conceal(self, samples: int) -> np.ndarray:
        """Packet loss concealment for `samples` (0: the length of the last packet)."""
        return self._run(None, samples or self._last, fec=False)

    _last = SAMPLE_RATE * 20 // 1000  # the usual WebRTC packet, until one has been decoded

    def _run(self, payload: bytes | None, samples: int, fec: bool) -> np.ndarray:
        size = len(payload) if payload is not None else 0
        # A lost packet's length comes from the peer's timestamps: no packet is longer than this.
        samples = min(samples, MAX_PACKET_SAMPLES)
        n = _lib().opus_decode_float(self._state, payload, size, self._pcm, samples, int(fec))
        if n < 0:
            return np.zeros(samples, np.float32)
        self._last = n
        return np.ctypeslib.as_array(self._pcm)[:n].copy()


class OpusEncoder:
    """16 kHz mono float32 in, Opus packets out; FEC on when `loss_percent` > 0 (VoIP mode only).

    `complexity` trades encoder CPU for quality (libopus: 0..10); `lookahead_samples` is how much
    later than its input a decoded packet's sound comes out (6.5 ms in VoIP mode, 2.5 ms in
    restricted low-delay mode).
    """

    def __init__(self, bitrate: int = 24_000, loss_percent: int = 0,
                 complexity: int = LIBOPUS_DEFAULT_COMPLEXITY,
                 application: int = OPUS_APPLICATION_VOIP) -> None:
        error = ctypes.c_int(0)
        lib = _lib()
        self._state = lib.opus_encoder_create(SAMPLE_RATE, 1, application, ctypes.byref(error))
        if not self._state or error.value != 0:
            raise OpusError(f"opus_encoder_create failed ({error.value})")
        lib.opus_encoder_ctl(self._state, OPUS_SET_BITRATE_REQUEST, bitrate)
        lib.opus_encoder_ctl(self._state, OPUS_SET_INBAND_FEC_REQUEST, int(loss_percent > 0))
        lib.opus_encoder_ctl(self._state, OPUS_SET_PACKET_LOSS_PERC_REQUEST, loss_percent)
        if lib.opus_encoder_ctl(self._state, OPUS_SET_COMPLEXITY_REQUEST, complexity) != 0:
            raise OpusError(f"Opus complexity {complexity} refused: use 0..10")
        lookahead = ctypes.c_int32(0)
        _encoder_get()(self._state, OPUS_GET_LOOKAHEAD_REQUEST, ctypes.byref(lookahead))
        self.lookahead_samples = lookahead.value
        self._out = ctypes.create_string_buffer(MAX_ENCODED_BYTES)

    def __del__(self) -> None:
        if getattr(self, "_state", None):
            _lib().opus_encoder_destroy(self._state)

    def encode(self, pcm: np.ndarray) -> bytes:
        frame = np.ascontiguousarray(pcm, np.float32)
        n = _lib().opus_encode_float(self._state, frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                     frame.size, self._out, MAX_ENCODED_BYTES)
        if n < 0:
            raise OpusError(f"opus_encode_float failed ({n})")
        return self._out.raw[:n]
