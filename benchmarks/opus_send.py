"""What the server's outgoing Opus costs on its event loop, and what a cheaper encoding loses.

    .venv/bin/python benchmarks/opus_send.py --rounds 7

Encodes the same speech (espeak-ng, else speech-like tones) chunk by chunk as the audio track
does, in interleaved rounds so that every way sees the same machine: "pyav" is the way before
(int16 PyAV frame -> PyAV's libopus, compression level 10), "ctypes cN" is `OpusChunkEncoder`
(float straight into libopus) at complexity N. Per way: thread CPU per second of audio (median
over rounds, and as a ratio to "pyav"), and the log-mel distance (mean |dB| over 80 bins x 10 ms
hops) of the decoded speech from the input. For scale, the same distance at 32 kbit/s, what
Chromium spends on a microphone. Prints a table and writes JSON.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from statistics import median

import av
import numpy as np

from lipstream.bench import speechlike
from lipstream.engine.audio import load_audio
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.measure.opus_quality import ChunkEncode, encoder_distance_db, whole_chunks
from lipstream.streaming.clock import AUDIO_CHUNK_SAMPLES
from lipstream.streaming.tracks import OPUS_BITRATE, RawChunks
from lipstream.streaming.tracks import OpusChunkEncoder as CtypesChunks

BROWSER_BITRATE = 32_000  # bit/s
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


def speech() -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        return speechlike(10.0)
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True, capture_output=True)
        return load_audio(wav)


def cpu_ms_per_audio_s(encode: ChunkEncode, pieces: np.ndarray) -> float:
    start = time.thread_time()
    for k, piece in enumerate(pieces):
        encode(piece, k * AUDIO_CHUNK_SAMPLES)
    return (time.thread_time() - start) * 1e3 / (pieces.size / SAMPLE_RATE)


def ways(levels: list[int]) -> dict[str, Callable[[], ChunkEncode]]:
    made: dict[str, Callable[[], ChunkEncode]] = {"pyav": PyAVChunks}
    for level in levels:
        made[f"ctypes c{level}"] = lambda level=level: CtypesChunks(complexity=level)  # type: ignore[misc]
    return made


def row(cpu_ms: list[float], pyav_ms: float, distance_db: float) -> dict[str, float]:
    return {"cpu_ms_per_audio_s": median(cpu_ms), "ratio_to_pyav": median(cpu_ms) / pyav_ms,
            "mel_distance_db": distance_db}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 9, 7, 5, 3, 1, 0])
    parser.add_argument("--out", default="benchmarks/results/opus_send.json")
    args = parser.parse_args()
    pcm = speech()
    pieces = whole_chunks(pcm)
    makers = ways(args.levels)
    cpu: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(args.rounds):
        for name, make in makers.items():  # interleaved: each way, then the next, every round
            cpu[name].append(cpu_ms_per_audio_s(make(), pieces))
    rows = {name: row(times, median(cpu["pyav"]), encoder_distance_db(makers[name](), pcm))
            for name, times in cpu.items()}
    browser = encoder_distance_db(CtypesChunks(bitrate=BROWSER_BITRATE, complexity=10), pcm)
    print(f"{pieces.size / SAMPLE_RATE:.1f} s of speech, {args.rounds} interleaved rounds")
    print(f"{'way':<12}{'CPU ms per audio s':>20}{'ratio':>8}{'log-mel dist dB':>17}")
    for name, row in rows.items():
        print(f"{name:<12}{row['cpu_ms_per_audio_s']:>20.2f}{row['ratio_to_pyav']:>8.2f}"
              f"{row['mel_distance_db']:>17.2f}")
    print(f"for scale: complexity 10 at {BROWSER_BITRATE // 1000} kbit/s (a browser's microphone): "
          f"{browser:.2f} dB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "ways": rows, "browser_bitrate_db": browser}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
