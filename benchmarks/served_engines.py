"""An engine step's CPU as a server worker spends it: several engines in one thread, paced at 25 fps.

`benchmarks/stages.py` times one engine over and over, so its data stay in the CPU's caches; a
worker's render thread steps each of its sessions' engines in turn once per 40 ms tick and sleeps
in between. Here the same step (push a frame of speech-like audio, pop the frame, convert it to
I420 as the producer does) runs three ways in one process, taking turns round by round so each
sees the same machine: one engine back to back (what stages.py measures), K engines back to
back, and K engines paced at 25 fps. Per way: this thread's CPU per engine step, and per stage
(background with the head's move, rig field, warp, mouth interior, blink, motion model, mel,
I420), as the mean over the measured ticks. Prints a table, writes JSON.

    python benchmarks/served_engines.py [--engines 4] [--ticks 150] [--rounds 3]
"""

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from lipstream.bench import speechlike  # noqa: E402
from lipstream.engine import engine as engine_module  # noqa: E402
from lipstream.engine import mel, render, runners  # noqa: E402
from lipstream.engine.avatar import Avatar  # noqa: E402
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME  # noqa: E402
from lipstream.engine.engine import Engine, EngineConfig  # noqa: E402

TICK_S = 1 / 25  # a video frame
BURN_IN_TICKS = 20
# (owner, method, stage): what each stage is, timed where it is called (outermost call only)
STAGES = (
    (render.Renderer, "background", "background + head move"),
    (render.Renderer, "field", "rig field"),
    (render.Renderer, "warp", "warp"),
    (render.Renderer, "composite", "mouth interior"),
    (render.Renderer, "blink", "blink"),
    (runners.OnnxRunner, "run", "motion model"),
    (mel.MelStream, "push", "mel"),
    (engine_module, "to_i420", "I420"),
)


class StageClock:
    """Thread CPU per stage, from wrappers put around the stages' functions for a `with` block."""

    def __init__(self) -> None:
        self.cpu_s: Counter[str] = Counter()
        self._inside = False  # a stage calling another is counted once, as the outer one

    def timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._inside:
                return fn(*args, **kwargs)
            self._inside, start = True, time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu_s[stage] += time.thread_time() - start
                self._inside = False
        return wrapper

    @contextmanager
    def installed(self) -> Iterator["StageClock"]:
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in STAGES]
        for (owner, name, stage), (_, _, fn) in zip(STAGES, saved, strict=True):
            setattr(owner, name, self.timed(fn, stage))
        try:
            yield self
        finally:
            for owner, name, fn in saved:
                setattr(owner, name, fn)


def engines(count: int, ticks: int, avatar: Avatar) -> list[tuple[Engine, np.ndarray]]:
    """Engines with their own seeds (head motion, blinks) and speech, primed like a session's."""
    made = []
    for k in range(count):
        engine = Engine(avatar, EngineConfig(seed=k))
        engine.push_audio(np.zeros(engine.latency_samples - SAMPLES_PER_VIDEO_FRAME, np.float32), SAMPLE_RATE)
        made.append((engine, speechlike((ticks + BURN_IN_TICKS + 2) * TICK_S, seed=2 + k)))
    return made


def step(engine: Engine, audio: np.ndarray, tick: int) -> None:
    start = tick * SAMPLES_PER_VIDEO_FRAME
    engine.push_audio(audio[start : start + SAMPLES_PER_VIDEO_FRAME], SAMPLE_RATE)
    frame = engine.pop_frame()
    assert frame is not None
    frame.yuv  # noqa: B018 - converted on first use, as the server's producer reads it


def run_way(count: int, paced: bool, ticks: int, avatar: Avatar) -> dict[str, float]:
    """Mean thread CPU ms per engine step, in all and per stage."""
    sessions, clock = engines(count, ticks, avatar), StageClock()
    total_s, start = 0.0, time.perf_counter()
    with clock.installed():
        for tick in range(BURN_IN_TICKS + ticks):
            if tick == BURN_IN_TICKS:
                clock.cpu_s.clear()
            if paced:
                time.sleep(max(start + tick * TICK_S - time.perf_counter(), 0.0))
            before = time.thread_time()
            for engine, audio in sessions:
                step(engine, audio, tick)
            if tick >= BURN_IN_TICKS:
                total_s += time.thread_time() - before
    steps = ticks * count
    row = {"step": total_s * 1e3 / steps}
    row.update({stage: clock.cpu_s[stage] * 1e3 / steps for _, _, stage in STAGES})
    row["other"] = row["step"] - sum(clock.cpu_s.values()) * 1e3 / steps
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=4, help="K: a worker's sessions")
    parser.add_argument("--ticks", type=int, default=150, help="measured ticks per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/served_engines.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as the server sets it
    avatar = Avatar.default()
    k = args.engines
    ways = {"1 engine, back to back": (1, False), f"{k} engines, back to back": (k, False),
            f"{k} engines, paced 25 fps": (k, True)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, (count, paced) in ways.items():
            runs[name].append(run_way(count, paced, args.ticks, avatar))
    table = {name: {key: median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}
    print_table(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"engines": args.engines, "ticks": args.ticks, "rounds": args.rounds,
                                    "cpu_ms_per_step": table}, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_table(table: dict[str, dict[str, float]]) -> None:
    names = list(table)
    keys = list(table[names[0]])
    print(f"thread CPU ms per engine step, 512 px (median of rounds)\n{'stage':<24}"
          + "".join(f"{name:>26}" for name in names))
    for key in keys:
        print(f"{key:<24}" + "".join(f"{table[name][key]:>26.2f}" for name in names))
    first = table[names[0]]["step"]
    print(f"{'x one engine':<24}" + "".join(f"{table[name]['step'] / first:>26.2f}" for name in names))


if __name__ == "__main__":
    raise SystemExit(main())
