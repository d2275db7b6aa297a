"""Training-corpus throughput per engine and voice, on one core: utterances/s, real-time factor.

    .venv/bin/python benchmarks/corpus_speed.py --utterances 20

Synthesis (clean) and augmentation are timed separately, after one warm-up utterance per voice
(which loads the engine), then the mixed `utterances("train")` stream as training consumes it.
Run it under `taskset -c 0` for the one-core figure. Prints a table and writes JSON.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lipstream.engine.constants import SAMPLE_RATE
from lipstream.training import corpus, text
from lipstream.training.tts import available

VOICES = [
    ("festival", "kal_diphone", "en"),
    ("festival", "cmu_us_slt_arctic_hts", "en"),
    ("flite", "kal16", "en"),
    ("flite", "slt", "en"),
    ("espeak", "+m1", "en-us"),
    ("espeak", "+f2", "de"),
    ("piper", "joe", "en-us"),
]


def measure_voice(engine: str, voice: str, language: str, count: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    texts = [text.random_text(language, rng) for _ in range(count + 1)]
    corpus.synthesize(engine, voice, texts[0], language)  # warm-up: loads the engine
    start = time.perf_counter()
    clean = [corpus.synthesize(engine, voice, t, language) for t in texts[1:]]
    synth_s = time.perf_counter() - start
    start = time.perf_counter()
    for u in clean:
        corpus.augment(u, rng)
    augment_s = time.perf_counter() - start
    audio_s = sum(u.audio.size for u in clean) / SAMPLE_RATE
    return {
        "utterances_per_s": count / synth_s,
        "realtime_factor": audio_s / synth_s,
        "mean_duration_s": audio_s / count,
        "augment_utterances_per_s": count / augment_s,
    }


def measure_stream(split: str, count: int, seed: int) -> dict[str, float]:
    stream = corpus.utterances(split, seed)
    next(stream)
    start = time.perf_counter()
    audio_s = sum(next(stream).audio.size for _ in range(count)) / SAMPLE_RATE
    elapsed = time.perf_counter() - start
    return {"utterances_per_s": count / elapsed, "realtime_factor": audio_s / elapsed}


def print_table(result: dict[str, dict[str, float]]) -> None:
    nan = float("nan")
    print(
        f"{'engine/voice/language':42s} {'utt/s':>7s} {'x realtime':>10s} {'mean s':>7s} {'augm. utt/s':>12s}"
    )
    for name, row in result.items():
        mean_s, augment_rate = row.get("mean_duration_s", nan), row.get("augment_utterances_per_s", nan)
        print(
            f"{name:42s} {row['utterances_per_s']:7.1f} {row['realtime_factor']:10.0f}"
            f" {mean_s:7.2f} {augment_rate:12.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/corpus_speed.json")
    args = parser.parse_args()
    result: dict[str, dict[str, float]] = {}
    for engine, voice, language in VOICES:
        if available(engine):
            result[f"{engine}/{voice or '-'}/{language}"] = measure_voice(
                engine, voice, language, args.utterances, args.seed
            )
    for split in corpus.SPLITS:
        result[f"stream/{split} (augmented)"] = measure_stream(split, 3 * args.utterances, args.seed)
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
