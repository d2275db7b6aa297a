"""Does the mouth rest when nobody speaks, and still move for quiet speech?

Every probe of `lipstream.training.quiet` (silence, hiss, fan, hum, breaths, air blown onto the
microphone, rumble, wind pops, typing) goes through an `Engine` as a stream would, and the
largest displayed (smoothed) control per probe is reported for each model side by side: the
baseline, the shipped model and any `--models name=path.onnx`. A mouth at rest shows every
control below 0.15. The other side of the trade: held-out speech at -20, -40 and -50 dBFS
(active-speech RMS), where jaw correlation with the phone-derived truth must hold up.

    python benchmarks/rest.py [--models new=runs/x/motion.onnx ...] [--utterances 6]
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from lipstream.engine.avatar import Avatar  # noqa: E402
from lipstream.engine.constants import MEL_FRAMES_PER_VIDEO_FRAME  # noqa: E402
from lipstream.engine.controls import JAW_OPEN  # noqa: E402
from lipstream.engine.engine import Engine  # noqa: E402
from lipstream.engine.motion import MotionModel, load_motion_model  # noqa: E402
from lipstream.training.lipsync_metrics import pearson  # noqa: E402
from lipstream.training.quiet import PROBES, REST_LIMIT  # noqa: E402
from lipstream.training.validation import speech_power  # noqa: E402

SPEECH_LEVELS_DBFS = (-20, -40, -50)


def controls_through_engine(avatar: Avatar, model: MotionModel, audio: np.ndarray) -> np.ndarray:
    """The smoothed controls of every frame the engine makes for `audio` (16 kHz float): (N, 5)."""
    engine = Engine(avatar, model=model)
    engine.push_audio(audio, 16_000)
    engine.finish()
    rows = []
    while (frame := engine.pop_frame(render=False)) is not None:
        rows.append(frame.controls)
    return np.stack(rows)


def speech_rows(avatar: Avatar, models: dict[str, MotionModel], count: int) -> dict[str, dict[str, float]]:
    from lipstream.training import corpus

    stream = corpus.utterances("heldout", seed=777, augment=False)
    utts = [next(stream) for _ in range(count)]
    rows: dict[str, dict[str, float]] = {}
    for level in SPEECH_LEVELS_DBFS:
        row = {}
        for name, model in models.items():
            pred, truth = [], []
            for utt in utts:
                audio = (utt.audio * np.sqrt(10 ** (level / 10) / speech_power(utt.audio))).astype(np.float32)
                jaw = controls_through_engine(avatar, model, audio)[:, JAW_OPEN]
                target = utt.controls[MEL_FRAMES_PER_VIDEO_FRAME - 1 :: MEL_FRAMES_PER_VIDEO_FRAME, JAW_OPEN]
                k = min(len(jaw), len(target))
                pred.append(jaw[:k])
                truth.append(target[:k])
            row[name] = pearson(np.concatenate(pred), np.concatenate(truth))  # NaN: the mouth never moved
        rows[f"speech {level} dBFS: jaw corr"] = row
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=[], metavar="NAME=PATH", help="exported .onnx files")
    p.add_argument("--utterances", type=int, default=6, help="held-out utterances per speech level")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/rest.json"))
    args = p.parse_args()
    models: dict[str, MotionModel] = {"baseline": load_motion_model("baseline"),
                                      "shipped": load_motion_model(None)}
    for item in args.models:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--models takes name=path.onnx, got {item!r}")
        models[name] = load_motion_model(path)
    avatar = Avatar.default()
    start = time.monotonic()
    quiet: dict[str, dict[str, float]] = {}
    for probe, make in PROBES.items():
        audio = make()
        quiet[probe] = {name: float(controls_through_engine(avatar, m, audio).max())
                        for name, m in models.items()}
    speech = speech_rows(avatar, models, args.utterances)
    names = list(models)
    width = max(len(k) for k in [*quiet, *speech]) + 2
    print(f"\nlargest displayed control while nobody speaks (rest: all < {REST_LIMIT})\n")
    print("".ljust(width) + "".join(f"{n:>12}" for n in names))
    for probe, row in quiet.items():
        print(probe.ljust(width) + "".join(f"{row[n]:>11.2f}{'*' if row[n] >= REST_LIMIT else ' '}"
                                           for n in names))
    print(f"\n{args.utterances} held-out utterances at each level\n")
    for label, row in speech.items():
        print(label.ljust(width) + "".join(f"{row[n]:>11.3f} " if np.isfinite(row[n]) else f"{'still':>11} "
                                           for n in names))
    resting = {n: sum(row[n] < REST_LIMIT for row in quiet.values()) for n in names}
    print("\nprobes at rest: " + ", ".join(f"{n} {resting[n]}/{len(quiet)}" for n in names)
          + f"   ({time.monotonic() - start:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    speech = {label: {n: (v if np.isfinite(v) else None) for n, v in row.items()}
              for label, row in speech.items()}
    args.out.write_text(json.dumps({"rest_limit": REST_LIMIT, "models": {n: str(getattr(models[n], "name", n))
                                                                         for n in names},
                                    "quiet_max_control": quiet, "speech": speech, "at_rest": resting},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
