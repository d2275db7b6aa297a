"""Lip sync as a viewer sees it: held-out speech rendered, re-detected with FaceMesh, scored.

Each utterance takes `lipstream render`'s path, through H.264 (`lipstream.training.lipsync_render`).
Figures are defined in `lipstream.training.lipsync_metrics` (truth = jaw_open * (1 - lip_press) of
the phone-derived targets per frame; closure threshold 25% up the utterance's open range).

Rows: `oracle` (the truth controls rendered directly, no model and no smoothing: the ceiling the
renderer and the measurement allow), `oracle+smooth` (the same through the engine's control
smoother: what the smoothing costs), the baseline at each lookahead, and each trained model
(the shipped one, plus any `--models name=path.onnx`), clean and at 10 dB SNR (pink noise
relative to the speech's active level, as in training validation). `--closure-gains 0 2` scores
each trained model with the engine's /p b m/ closure from the viseme head off and at gain 2.
Condition `recorded`: real human speech (`lipstream.training.recorded_set`: Debian's
codec2-examples and an audiobook from pocketsphinx-testdata, phone-aligned by pocketsphinx), with
its own oracle row as the ceiling; `--no-recorded` leaves it out. `motion` is the row's mouth
motion (FaceMesh aperture spread, 5th-95th percentile) over its oracle's; a second table gives
shown/true standard deviation per control.

    python benchmarks/lipsync.py [--quick] [--utterances 20] [--size 320]
        [--models la0=runs/la0/motion.onnx ...] [--closure-gains 0 2] [--keep-videos DIR]
"""

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from lipstream.engine.avatar import Avatar, AvatarConfig  # noqa: E402
from lipstream.engine.constants import SAMPLE_RATE  # noqa: E402
from lipstream.engine.controls import CONTROL_NAMES  # noqa: E402
from lipstream.engine.engine import EngineConfig  # noqa: E402
from lipstream.engine.motion import BaselineMotionModel, MotionModel, load_motion_model, shipped_model_path  # noqa: E402
from lipstream.training.corpus import PHONESET, Utterance  # noqa: E402
from lipstream.training.lipsync_metrics import LipsyncScore, Measured, Truth, by_engine, make_truth, score  # noqa: E402
from lipstream.training.lipsync_render import measure, render_engine, render_oracle, wav_path  # noqa: E402
from lipstream.training.lipsync_set import heldout_set  # noqa: E402
from lipstream.training.recorded_set import ALIGNMENT_NOTE, recorded_set  # noqa: E402
from lipstream.training.validation import NOISY_SNR_DB, with_noise  # noqa: E402

ORACLE, ORACLE_SMOOTHED = "oracle", "oracle+smooth"
CLEAN, NOISY, RECORDED = "clean", f"{NOISY_SNR_DB:g}dB_snr", "recorded"  # the last: human speech
TARGETS = {"correlation": 0.75, "abs_lag_ms": 20.0, "closure_hit_rate": 0.90, "snr_corr_drop": 0.10,
           "motion_ratio": 0.90}
RECORDED_TARGETS = {"corr_of_oracle": 0.90, "abs_lag_ms": 20.0, "closure_hit_rate": 0.95,
                    "motion_ratio": 0.90}


@dataclass(frozen=True)
class Row:
    model: str
    lookahead_ms: int
    condition: str
    closure_gain: float | None = None  # EngineConfig.bilabial_closure, for models with a viseme head

    @property
    def label(self) -> str:
        return self.model if self.closure_gain is None else f"{self.model} pp{self.closure_gain:g}"


def make_models(args: argparse.Namespace) -> dict[str, MotionModel]:
    """Name -> model; baselines are made per lookahead in `rows`."""
    models: dict[str, MotionModel] = {}
    seen: dict[str, str] = {}  # file digest -> name: the shipped file is often also a run's export
    shipped = shipped_model_path()
    if shipped is not None and not args.no_shipped:
        models["shipped"] = load_motion_model(None)
        seen[_digest(shipped)] = "shipped"
    for item in args.models:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--models takes name=path.onnx, got {item!r}")
        if (same := seen.get(_digest(Path(path)))) is not None:
            print(f"{name}: the same file as {same}, scored once")
            continue
        models[name] = load_motion_model(path)
        seen[_digest(Path(path))] = name
    return models


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)


def plan(args: argparse.Namespace, trained: dict[str, MotionModel]) -> dict[Row, MotionModel | None]:
    rows: dict[Row, MotionModel | None] = {Row(ORACLE, 0, CLEAN): None, Row(ORACLE_SMOOTHED, 0, CLEAN): None}
    if args.recorded:
        rows[Row(ORACLE, 0, RECORDED)] = None
    for condition in (CLEAN, NOISY, RECORDED)[: 3 if args.recorded else 2]:
        for la in args.baseline_lookaheads:
            rows[Row("baseline", la, condition)] = BaselineMotionModel(la)
        for name, model in trained.items():
            for gain in args.closure_gains:
                rows[Row(name, model.lookahead_frames * 10, condition, gain)] = model
    return rows


Scored = dict[Row, list[tuple[Measured, Truth]]]


Speech = list[tuple[Utterance, tuple[str, ...]]]  # each utterance with the conditions it is scored in


def speech(args: argparse.Namespace) -> Speech:
    """Each utterance with the conditions it is scored in: synthetic clean and noisy, recorded as is."""
    utts = [(u, (CLEAN, NOISY)) for u in heldout_set(args.utterances, args.seed)]
    if args.recorded:
        utts += [(u, (RECORDED,)) for u in recorded_set()]
    return utts


def run(args: argparse.Namespace) -> tuple[Scored, Speech, dict[str, float]]:
    started = time.perf_counter()
    sets = speech(args)
    synth_s = time.perf_counter() - started
    avatar = Avatar.from_image(args.face, AvatarConfig(size=args.size)) if args.face else \
        Avatar.default(AvatarConfig(size=args.size))
    rows = plan(args, make_models(args))
    items: Scored = {row: [] for row in rows}
    rng = np.random.default_rng(args.seed)
    keep = args.keep_videos
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (utt, conditions) in enumerate(sets):
            truth = make_truth(utt.controls, utt.phones, PHONESET[utt.engine])
            audio = {CLEAN: wav_path(utt.audio, folder, "clean"),
                     NOISY: wav_path(with_noise(utt.audio, NOISY_SNR_DB, rng), folder, "noisy")}
            audio[RECORDED] = audio[CLEAN]
            for row, model in rows.items():
                if row.condition not in conditions:
                    continue
                name = f"{i:02d}-{row.label.replace(' ', '-')}-la{row.lookahead_ms}-{row.condition}"
                video = (keep / f"{name}.mp4") if keep else folder / "video.mp4"
                smooth = row.model == ORACLE_SMOOTHED
                rendered = (render_oracle(avatar, utt, args.seed, smooth) if model is None
                            else render_engine(avatar, model, audio[row.condition], args.seed,
                                               row.closure_gain))
                items[row].append((measure(rendered, video, args.mesh == "static"), truth))
            print(f"  utterance {i + 1}/{len(sets)} {utt.engine}:{utt.voice}:{utt.language} "
                  f"{utt.audio.size / SAMPLE_RATE:.1f} s", flush=True)
    timing = {"synthesis_s": synth_s, "total_s": time.perf_counter() - started}
    return items, sets, timing


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def oracle_of(scores: dict[Row, LipsyncScore], row: Row) -> LipsyncScore | None:
    """The ceiling for a row: the oracle on the same speech (the clean one for the noisy rows)."""
    return scores.get(Row(ORACLE, 0, RECORDED if row.condition == RECORDED else CLEAN))


def motion_ratio(scores: dict[Row, LipsyncScore], row: Row) -> float:
    oracle = oracle_of(scores, row)
    return scores[row].motion / oracle.motion if oracle is not None else float("nan")


def table(scores: dict[Row, LipsyncScore]) -> str:
    head = f"{'model':<18}{'la ms':>6}  {'condition':<11}{'corr':>6}{'lag ms':>8}{'closure':>9}" \
           f"{'viseme':>8}{'width':>7}{'motion':>8}{'frames':>8}{'face':>7}"
    lines = [head, "-" * len(head)]
    for row, s in scores.items():
        closure, face = _fmt(100 * s.closure_hit_rate, ".0f") + "%", _fmt(100 * s.face_found, ".0f") + "%"
        lines.append(f"{row.label:<18}{row.lookahead_ms:>6}  {row.condition:<11}"
                     f"{_fmt(s.correlation, '.3f'):>6}{_fmt(s.best_lag_ms, '+.0f'):>8}{closure:>9}"
                     f"{_fmt(s.viseme_accuracy, '.2f'):>8}{_fmt(s.width_correlation, '.2f'):>7}"
                     f"{_fmt(motion_ratio(scores, row), '.2f'):>8}{s.frames:>8}{face:>7}")
    return "\n".join(lines)


def std_table(scores: dict[Row, LipsyncScore]) -> str:
    """Per control, shown / true standard deviation (rows that render a model's controls)."""
    lines = [f"{'model':<18}{'condition':<11}" + "".join(f"{name:>12}" for name in CONTROL_NAMES)]
    for row, s in scores.items():
        if s.std_ratio is not None:
            lines.append(f"{row.label:<18}{row.condition:<11}"
                         + "".join(f"{_fmt(s.std_ratio[name], '.2f'):>12}" for name in CONTROL_NAMES))
    return "\n".join(lines)


def engine_table(by_row: dict[Row, dict[str, dict[str, Any]]]) -> str:
    """Clean and recorded rows: correlation / closure hit % per speech engine."""
    engines = sorted({e for figures in by_row.values() for e in figures})
    lines = [f"{'model':<18}{'la ms':>6}  " + "".join(f"{e:>16}" for e in engines)]
    for row, figures in by_row.items():
        if row.condition not in (CLEAN, RECORDED):
            continue
        cells = [f"{_fmt(figures[e]['correlation'], '.2f')} / "
                 f"{_fmt(100 * figures[e]['closure_hit_rate'], '.0f')}%" if e in figures else "-"
                 for e in engines]
        lines.append(f"{row.label:<18}{row.lookahead_ms:>6}  " + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def verdicts(scores: dict[Row, LipsyncScore]) -> dict[str, dict[str, bool]]:
    """The issue's targets, per trained model (against the baseline at the same lookahead, or 40 ms)."""
    out = {}
    for row, s in scores.items():
        if row.model in (ORACLE, ORACLE_SMOOTHED, "baseline") or row.condition == NOISY:
            continue
        if row.condition == RECORDED:
            out[f"{row.label} la{row.lookahead_ms} recorded"] = recorded_verdict(scores, row)
            continue
        noisy = scores.get(Row(row.model, row.lookahead_ms, NOISY, row.closure_gain))
        base = scores.get(Row("baseline", row.lookahead_ms, CLEAN)) or scores.get(Row("baseline", 40, CLEAN))
        checks = {
            "correlation": s.correlation >= TARGETS["correlation"],
            "lag": abs(s.best_lag_ms) <= TARGETS["abs_lag_ms"],
            "closure": s.closure_hit_rate >= TARGETS["closure_hit_rate"],
            "snr_drop": noisy is not None and s.correlation - noisy.correlation <= TARGETS["snr_corr_drop"],
            "motion": motion_ratio(scores, row) >= TARGETS["motion_ratio"],
        }
        if base is not None:
            checks["beats_baseline"] = (s.correlation > base.correlation
                                        and abs(s.best_lag_ms) <= abs(base.best_lag_ms)
                                        and s.closure_hit_rate > base.closure_hit_rate)
        out[f"{row.label} la{row.lookahead_ms}"] = checks
    return out


def recorded_verdict(scores: dict[Row, LipsyncScore], row: Row) -> dict[str, bool]:
    s, oracle = scores[row], oracle_of(scores, row)
    return {
        "corr_vs_oracle": oracle is not None and s.correlation >= RECORDED_TARGETS["corr_of_oracle"]
        * oracle.correlation,
        "lag": abs(s.best_lag_ms) <= RECORDED_TARGETS["abs_lag_ms"],
        "closure": s.closure_hit_rate >= RECORDED_TARGETS["closure_hit_rate"],
        "motion": motion_ratio(scores, row) >= RECORDED_TARGETS["motion_ratio"],
    }


def _finite(value: Any) -> Any:
    """NaN -> None, so the JSON is standard."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=20, help="held-out utterances (2-4 s of speech each)")
    p.add_argument("--quick", action="store_true", help="6 utterances, baseline at 40 ms only")
    p.add_argument("--no-recorded", dest="recorded", action="store_false",
                   help="leave out the recorded-speech set (codec2-examples, pocketsphinx-testdata)")
    p.add_argument("--size", type=int, default=320, help="frame side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--face", type=Path, help="face photo (default: the bundled avatar)")
    p.add_argument("--models", nargs="*", default=[], metavar="NAME=PATH",
                   help="exported .onnx files to score")
    p.add_argument("--no-shipped", action="store_true", help="leave the shipped model out")
    p.add_argument("--baseline-lookaheads", type=int, nargs="*", default=[0, 40, 80], metavar="MS")
    p.add_argument("--mesh", choices=("static", "video"), default="video",
                   help="FaceMesh tracking across frames, as MouthMeter does by default, or per frame")
    p.add_argument("--closure-gains", type=float, nargs="*", default=[EngineConfig().bilabial_closure],
                   metavar="G", help="EngineConfig.bilabial_closure values to score each model with "
                   f"(0: controls only; default {EngineConfig().bilabial_closure:g})")
    p.add_argument("--keep-videos", type=Path, help="keep every rendered mp4 in this folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/lipsync.json"))
    args = p.parse_args()
    if args.quick:
        args.utterances, args.baseline_lookaheads = min(args.utterances, 6), [40]
    return args


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args()
    if args.keep_videos:
        args.keep_videos.mkdir(parents=True, exist_ok=True)
    items, sets, timing = run(args)
    utts = [u for u, _ in sets]
    scores = {row: score(its) for row, its in items.items()}
    recorded = sum(RECORDED in c for _, c in sets)
    print(f"\n{len(utts) - recorded} synthetic held-out and {recorded} recorded utterances, {args.size} px, "
          f"{timing['total_s']:.0f} s (speech {timing['synthesis_s']:.0f} s)\n")
    print(table(scores))
    print("\nshown / true standard deviation per control\n" + std_table(scores))
    engines = {row: by_engine(its, [u for u, c in sets if row.condition in c]) for row, its in items.items()}
    print("\nclean and recorded, per speech engine: correlation / closure hit rate\n"
          + engine_table(engines) + "\n")
    checks = verdicts(scores)
    for name, c in checks.items():
        print(f"targets {name}: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in c.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite({
        "config": {"utterances": len(utts), "size": args.size, "seed": args.seed, "snr_db": NOISY_SNR_DB,
                   "models": args.models, "baseline_lookaheads": args.baseline_lookaheads,
                   "closure_gains": args.closure_gains},
        "heldout": [{"engine": u.engine, "voice": u.voice, "language": u.language, "text": u.text,
                     "seconds": round(u.audio.size / SAMPLE_RATE, 2)} for u in utts],
        "recorded_alignment": ALIGNMENT_NOTE if recorded else None,
        "rows": [{**asdict(row), **asdict(s), "by_engine": engines[row]}
                 for row, s in scores.items()],
        "targets": TARGETS, "recorded_targets": RECORDED_TARGETS, "verdicts": checks, "timing": timing,
    }), indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
