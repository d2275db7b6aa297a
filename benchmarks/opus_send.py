"""What the server's outgoing Opus costs on its event loop, and what a cheaper encoding loses.

    .venv/bin/python benchmarks/opus_send.py --rounds 7

Sends the same speech (espeak-ng, else speech-like tones) the way the audio track does, in
interleaved rounds so that every way sees the same machine: encode a packet, wrap it as aiortc does
(pack, RTP header), protect it with SRTP and `sendto` it on loopback. "pyav" is the first way (int16
PyAV frame -> PyAV's libopus, compression level 10), "before" the one before the last change, "voip
cN" and "low-delay cN" are `OpusChunkEncoder` (float straight into libopus) in libopus's VoIP mode
or its restricted low-delay mode (CELT only) at complexity N; "40 ms" ways send one packet per video
frame instead of two. Each way's lookahead is how much its packets' sound lags their input. Per way:
thread CPU per second of audio (median over rounds, and as a ratio to "pyav"), and the log-mel
distance (mean |dB| over 80 bins x 10 ms hops) of the decoded speech from the input. For scale, the
same distance at 32 kbit/s, what Chromium spends on a microphone. Not counted: the asyncio timer
wake-up per packet. Prints a table, writes JSON."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import median

import av
import numpy as np
from aiortc.codecs.opus import OpusEncoder as AiortcOpus
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from lipstream.bench import speechlike
from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.measure.opus_quality import ChunkEncode, encoder_distance_db, whole_chunks
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES
from lipstream.streaming.opus import OPUS_APPLICATION_RESTRICTED_LOWDELAY, OPUS_APPLICATION_VOIP
from lipstream.streaming.tracks import OPUS_APPLICATION, OPUS_BITRATE, OPUS_COMPLEXITY, RawChunks
from lipstream.streaming.tracks import OpusChunkEncoder as CtypesChunks

BROWSER_BITRATE = 32_000  # bit/s
BEFORE_BITRATE = 48_000  # bit/s: what the server sent before the low-delay mode
SRTP_KEY_BYTES = 30  # AES-128 key + 14-byte salt, as DTLS-SRTP derives
OPUS_PAYLOAD_TYPE = 111
MODES = {"voip": OPUS_APPLICATION_VOIP, "low-delay": OPUS_APPLICATION_RESTRICTED_LOWDELAY}
TEXT = ("Papa bought a big map. Bob, look at the moon! The quick brown fox jumps over the lazy dog; "
        "she sells sea shells by the sea shore, and six thick thistle sticks.")


class PyAVChunks:
    """The encoder before this benchmark's change: an int16 PyAV frame into PyAV's libopus."""

    def __init__(self, bitrate: int = OPUS_BITRATE) -> None:
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate, self.codec.layout, self.codec.format = SAMPLE_RATE, "mono", "s16"
        self.codec.bit_rate, self.codec.time_base = bitrate, Fraction(1, SAMPLE_RATE)
        self.codec.options = {"application": "voip"}
        self.frames = RawChunks()  # the int16 frame the track used to build

    def __call__(self, pcm: np.ndarray, pts: int) -> av.Packet | av.AudioFrame:
        (packet,) = self.codec.encode(self.frames(pcm, pts))
        return packet


@dataclass(frozen=True)
class Way:
    make: Callable[[], ChunkEncode]
    packet_samples: int = AUDIO_CHUNK_SAMPLES


class Sender:
    """What happens to a packet after the track returns it: aiortc's pack, RTP, SRTP, sendto."""

    def __init__(self) -> None:
        self.pack = AiortcOpus().pack
        self.srtp = Session(Policy(key=os.urandom(SRTP_KEY_BYTES), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: drops when full
        self.sink.bind(("127.0.0.1", 0))
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sequence = 0

    def send(self, packet: av.Packet) -> None:
        (payload,), timestamp = self.pack(packet)
        self.sequence += 1
        rtp = RtpPacket(payload_type=OPUS_PAYLOAD_TYPE, sequence_number=self.sequence & 0xFFFF,
                        timestamp=timestamp & 0xFFFFFFFF, ssrc=1234, payload=payload)
        self.out.sendto(self.srtp.protect(rtp.serialize()), self.sink.getsockname())


def speech() -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        return speechlike(10.0)
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True, capture_output=True)
        return load_audio(wav)


def cpu_ms_per_audio_s(way: Way, pcm: np.ndarray, sender: Sender) -> float:
    pieces, encode = whole_chunks(pcm, way.packet_samples), way.make()
    start = time.thread_time()
    for k, piece in enumerate(pieces):
        packet = encode(piece, k * way.packet_samples)
        assert isinstance(packet, av.Packet)
        sender.send(packet)
    return (time.thread_time() - start) * 1e3 / (pieces.size / SAMPLE_RATE)


def ways(levels: list[int]) -> dict[str, Way]:
    made = {"pyav": Way(PyAVChunks), "before: voip c5 48k": Way(lambda: CtypesChunks(
        bitrate=BEFORE_BITRATE, complexity=5, application=OPUS_APPLICATION_VOIP))}
    for level in levels:
        for mode, application in MODES.items():
            made[f"{mode} c{level}"] = Way(
                lambda level=level, application=application: CtypesChunks(  # type: ignore[misc]
                    complexity=level, application=application))
    shipped = next(mode for mode, application in MODES.items() if application == OPUS_APPLICATION)
    made[f"{shipped} c{OPUS_COMPLEXITY} 40 ms"] = Way(CtypesChunks, SAMPLES_PER_VIDEO_FRAME)
    return made


def row(cpu_ms: list[float], pyav_ms: float, way: Way, pcm: np.ndarray) -> dict[str, float]:
    encode = way.make()
    return {"cpu_ms_per_audio_s": median(cpu_ms), "ratio_to_pyav": median(cpu_ms) / pyav_ms,
            "mel_distance_db": encoder_distance_db(encode, pcm, way.packet_samples),
            "lookahead_ms": getattr(encode, "lookahead_s", 0.0) * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 5, 3, 1, 0])
    parser.add_argument("--out", default="benchmarks/results/opus_send.json")
    args = parser.parse_args()
    pcm, sender, made = speech(), Sender(), ways(args.levels)
    cpu: dict[str, list[float]] = {name: [] for name in made}
    for _ in range(args.rounds):
        for name, way in made.items():  # interleaved: each way, then the next, every round
            cpu[name].append(cpu_ms_per_audio_s(way, pcm, sender))
    rows = {name: row(times, median(cpu["pyav"]), made[name], pcm) for name, times in cpu.items()}
    browser = encoder_distance_db(CtypesChunks(bitrate=BROWSER_BITRATE, complexity=10), pcm)
    print(f"{pcm.size / SAMPLE_RATE:.1f} s of speech, {args.rounds} interleaved rounds")
    print(f"{'way':<22}{'CPU ms per audio s':>20}{'ratio':>8}{'log-mel dist dB':>17}{'lookahead ms':>14}")
    for name, result in rows.items():
        print(f"{name:<22}{result['cpu_ms_per_audio_s']:>20.2f}{result['ratio_to_pyav']:>8.2f}"
              f"{result['mel_distance_db']:>17.2f}{result['lookahead_ms']:>14.1f}")
    print(f"for scale: complexity 10 at {BROWSER_BITRATE // 1000} kbit/s (a browser's microphone): "
          f"{browser:.2f} dB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "ways": rows, "browser_bitrate_db": browser}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
