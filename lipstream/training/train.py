"""`lipstream train`: corpus pool -> MotionNet -> held-out validation -> ONNX with metadata.

Reproducible from the seed: the pool, the crops and the initial weights all derive from it.
Everything a run makes lands in its run directory (checkpoint, loss curves, metrics, ONNX);
`--install` copies the ONNX and its sidecar into the package as the shipped model; `--resume`
continues a stopped run from its last validation (see resume.py).
"""

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lipstream.engine.config import seed_problem
from lipstream.engine.constants import HOP_MS
from lipstream.engine.controls import N_CONTROLS
from lipstream.errors import ConfigError, SpeechEngineError
from lipstream.training.augment import DEFAULT_AUGMENT, AugmentConfig
from lipstream.training.calibrate import FitPlan, calibrate_file
from lipstream.training.features import (
    CropSampler,
    UtteranceSource,
    augmented_source,
    corpus_source,
    noise_bank,
    summarize,
)
from lipstream.training.limits import check_step_memory
from lipstream.training.model_config import ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2400
    batch_size: int = 32
    crop_frames: int = 256  # mel frames per training crop (2.56 s)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    seed: int = 0
    threads: int = 2  # torch threads, and corpus worker processes
    pool_utterances: int = 1500  # (~1.8 h of speech) synthesised once per run, sampled as random crops
    val_utterances: int = 40  # held-out voices, clean and at 10 dB SNR
    val_every: int = 250
    context_ms: int = 240  # includes the video frame's own 40 ms
    lookahead_ms: int = 40
    # Squared error, not L1: L1 fits the median, which for sparse controls (closures, tucks) is 0.
    control_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 2.0, 1.0)  # closures matter most to a viewer
    viseme_weight: float = 0.02  # cross-entropy ~1 against squared errors ~0.01
    # Against regression to the mean (see losses.py). Off: as a fine-tune (velocity 4, spread 2) they
    # matched what the calibration already does and pressed the lips on other consonants (docs/model.md).
    velocity_weight: float = 0.0
    spread_weight: float = 0.0
    channels: int = ModelConfig.channels
    init_from: str = ""  # an exported .onnx to fine-tune (same dimensions); "": random weights
    dilations: tuple[int, ...] = ModelConfig.dilations
    # Voice perturbation of the training speech (augment.py): probabilities per utterance
    p_vtlp: float = DEFAULT_AUGMENT.p_vtlp
    p_pitch: float = DEFAULT_AUGMENT.p_pitch
    prompts_share: float = 0.0  # share of the pool drawn from recorded human prompts (prompts.py)

    def command(self) -> str:
        """The `lipstream train` options that reproduce this run."""
        return (f"lipstream train --steps {self.steps} --seed {self.seed} --batch-size {self.batch_size} "
                f"--context-ms {self.context_ms} --lookahead-ms {self.lookahead_ms} "
                f"--pool-utterances {self.pool_utterances} --val-utterances {self.val_utterances} "
                f"--velocity-weight {self.velocity_weight:g} --spread-weight {self.spread_weight:g} "
                f"--channels {self.channels} --dilations {' '.join(map(str, self.dilations))} "
                f"--lr {self.lr:g}"
                + (f" --init-from {self.init_from}" if self.init_from else "")
                # only when on, so that the runs before these options keep their command (and --resume)
                + (f" --vtlp {self.p_vtlp:g}" if self.p_vtlp else "")
                + (f" --pitch {self.p_pitch:g}" if self.p_pitch else "")
                + (f" --prompts {self.prompts_share:g}" if self.prompts_share else ""))

    def augment_config(self) -> AugmentConfig:
        return replace(DEFAULT_AUGMENT, p_vtlp=self.p_vtlp, p_pitch=self.p_pitch)

    def model_config(self) -> ModelConfig:
        return ModelConfig(context_frames=self.context_ms // HOP_MS,
                           lookahead_frames=self.lookahead_ms // HOP_MS,
                           channels=self.channels, dilations=self.dilations)


DEFAULTS = TrainConfig()


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5%."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))


def _pool_source(cfg: TrainConfig) -> UtteranceSource:
    """The corpus, with the recorded prompts' share mixed in if the run asks for one."""
    if not cfg.prompts_share:
        return augmented_source(cfg.augment_config())
    from lipstream.training.prompts import aligned_prompts, with_prompts

    t0 = time.monotonic()
    found = aligned_prompts(cfg.threads)  # here, once: the corpus workers fork with them aligned
    log.info("prompts: %d aligned in %.0f s", len(found), time.monotonic() - t0)
    return with_prompts(cfg.augment_config(), cfg.prompts_share)  # type: ignore[no-any-return]


def train(cfg: TrainConfig, out_dir: Path, source: UtteranceSource | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Run training (resume: from out_dir's last validation); returns the run summary (also written
    to out_dir/summary.json)."""
    import torch

    from lipstream.training.features import build_pool, mel_statistics
    from lipstream.training.model import MotionNet
    from lipstream.training.resume import read_state
    from lipstream.training.validation import build_validation

    state = read_state(out_dir, cfg.command()) if resume else None
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    net = MotionNet(cfg.model_config())
    if cfg.init_from:  # before the corpus synthesis, so that a file that does not fit fails at once
        from lipstream.training.warmstart import load_exported

        load_exported(net, Path(cfg.init_from))  # its mel normalisation too
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # None: the corpus, its training speech augmented as this run says (a test's own source is used as given)
    pool_source = source or _pool_source(cfg)
    pool = build_pool("train", cfg.seed, cfg.pool_utterances, cfg.threads, source=pool_source)
    val = build_validation(cfg.seed, cfg.val_utterances, cfg.threads, source=source or corpus_source)
    data_s = time.monotonic() - t0
    log.info("pool: %s in %.0f s", summarize(pool), data_s)

    if not cfg.init_from:
        mean, std = mel_statistics(pool)
        net.set_normalisation(torch.from_numpy(mean), torch.from_numpy(std))
    sampler = CropSampler(pool, cfg.crop_frames, cfg.seed, noise=noise_bank(cfg.seed))
    history = _fit(net, cfg, sampler, val.clean, out_dir, state)
    train_s = time.monotonic() - t0 - data_s

    metrics = _final_metrics(net, val)
    summary = {
        "command": cfg.command(), "config": asdict(cfg),
        "corpus": {"train": summarize(pool), "heldout": summarize(val.clean)},
        "metrics": metrics, "wall_s": {"data": round(data_s, 1), "train": round(train_s, 1)},
        "final_train_loss": history[-1]["train_loss"],
    }
    torch.save({"state_dict": net.state_dict(), "model_config": net.config.to_dict(), "summary": summary},
               out_dir / "checkpoint.pt")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _fit(net: Any, cfg: TrainConfig, sampler: CropSampler, val: list[Any],
         out_dir: Path, state: dict[str, Any] | None) -> list[dict[str, float]]:
    import torch
    import torch.nn.functional as F

    from lipstream.training.losses import control_losses
    from lipstream.training.resume import restore, save_state
    from lipstream.training.validation import score
    from lipstream.training.warmstart import freeze_norms

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    weights = torch.tensor(cfg.control_weights[:N_CONTROLS])
    first = net.config.context_frames - 1  # crop frame of output 0's target
    parts = {"net": net, "optimizer": opt, "scheduler": sched, "sampler": sampler}
    done, history = restore(state, parts) if state is not None else (0, [])
    running: list[tuple[float, float]] = []
    start = time.monotonic()
    for step in range(done, cfg.steps):
        net.train()
        if cfg.init_from:
            freeze_norms(net)
        batch = sampler.batch(cfg.batch_size)
        controls, logits = net(torch.from_numpy(batch.mel))
        n_out = controls.shape[1]
        target_c = torch.from_numpy(batch.controls[:, first : first + n_out])
        target_v = torch.from_numpy(batch.visemes[:, first : first + n_out])
        terms = control_losses(controls, target_c, weights)
        loss_c = terms.control
        for weight, term in ((cfg.velocity_weight, terms.velocity), (cfg.spread_weight, terms.spread)):
            if weight:  # a zero weight adds nothing, not even a NaN gradient from a flat crop's std
                loss_c = loss_c + weight * term
        loss_v = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_v.reshape(-1))
        loss = loss_c + cfg.viseme_weight * loss_v
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append((loss_c.item(), loss_v.item()))
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            row = _log_row(step + 1, running, sched.get_last_lr()[0], time.monotonic() - start, cfg)
            row.update(_val_row(score(val, sequence_predictor(net))))
            history.append(row)
            running = []
            log.info("step %d: %s", step + 1, {k: round(v, 4) for k, v in row.items()})
            _write_history(history, out_dir)
            save_state(out_dir, step + 1, cfg.command(), parts, history)
    return history


def _log_row(step: int, running: list[tuple[float, float]], lr: float, elapsed_s: float,
             cfg: TrainConfig) -> dict[str, float]:
    loss_c = float(np.mean([c for c, _ in running]))
    loss_v = float(np.mean([v for _, v in running]))
    return {"step": step, "lr": lr, "elapsed_s": round(elapsed_s, 1), "train_control_mse": loss_c,
            "train_viseme_ce": loss_v, "train_loss": loss_c + cfg.viseme_weight * loss_v}


def _val_row(scores: dict[str, Any]) -> dict[str, float]:
    return {"val_jaw_corr": scores["correlation"]["jaw_open"], "val_viseme_acc": scores["viseme_accuracy"],
            "val_control_mae": float(np.mean(list(scores["mae"].values())))}


def sequence_predictor(net: Any) -> Any:
    """mel (T, N_MELS) -> controls (T, 5), viseme probabilities (T, 15) for every mel frame."""
    import torch

    from lipstream.training.validation import pad_for_windows

    def predict(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        net.eval()
        padded = pad_for_windows(mel, net.config.context_frames, net.config.lookahead_frames)
        with torch.no_grad():
            controls, logits = net(torch.from_numpy(padded)[None])
        return controls[0].numpy(), torch.softmax(logits[0], -1).numpy()

    return predict


def _final_metrics(net: Any, val: Any) -> dict[str, Any]:
    from lipstream.training.validation import baseline_jaw_correlation, rest_check, score

    predict = sequence_predictor(net)
    clean, noisy = score(val.clean, predict), score(val.noisy, predict)
    return {
        "heldout_clean": clean, "heldout_10db_snr": noisy,
        "jaw_corr_drop_at_10db": clean["correlation"]["jaw_open"] - noisy["correlation"]["jaw_open"],
        "baseline_jaw_corr": {"clean": baseline_jaw_correlation(val.clean),
                              "10db_snr": baseline_jaw_correlation(val.noisy)},
        "rest_max_control": rest_check(predict),
    }


def _write_history(history: list[dict[str, float]], out_dir: Path) -> None:
    keys = list(history[0])
    lines = [",".join(keys)] + [",".join(f"{row[k]:.6g}" for k in keys) for row in history]
    (out_dir / "loss.csv").write_text("\n".join(lines) + "\n")
    (out_dir / "loss.json").write_text(json.dumps(history, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in history]
    for key in ("train_loss", "train_control_mse", "val_control_mae"):
        ax1.plot(steps, [r[key] for r in history], label=key)
    for key in ("val_jaw_corr", "val_viseme_acc"):
        ax2.plot(steps, [r[key] for r in history], label=key)
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=80)
    plt.close(fig)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("--out", type=Path, default=Path("runs") / "motion", help="run directory")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--context-ms", type=int, default=d.context_ms,
                        help=f"audio up to the end of each video frame the model hears ({d.context_ms})")
    parser.add_argument("--lookahead-ms", type=int, default=d.lookahead_ms,
                        help=f"audio after the video frame the model hears (default {d.lookahead_ms})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads and corpus workers")
    parser.add_argument("--pool-utterances", type=int, default=d.pool_utterances,
                        help=f"training utterances synthesised per run (default {d.pool_utterances})")
    parser.add_argument("--val-utterances", type=int, default=d.val_utterances)
    parser.add_argument("--velocity-weight", type=float, default=d.velocity_weight,
                        help=f"loss on frame-to-frame control change (default {d.velocity_weight:g})")
    parser.add_argument("--spread-weight", type=float, default=d.spread_weight,
                        help=f"loss on each control's spread over a crop (default {d.spread_weight:g})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    parser.add_argument("--init-from", default=d.init_from, metavar="ONNX",
                        help="fine-tune an exported model (same dimensions) instead of random weights")
    parser.add_argument("--channels", type=int, default=d.channels, help="temporal conv width")
    parser.add_argument("--dilations", type=int, nargs="+", default=list(d.dilations),
                        help="one kernel-3 conv per dilation (receptive field 1 + 2 * sum)")
    alpha_lo, alpha_hi = DEFAULT_AUGMENT.vtlp_alpha
    semitones_lo, semitones_hi = DEFAULT_AUGMENT.pitch_semitones
    parser.add_argument("--vtlp", type=float, default=d.p_vtlp, metavar="P",
                        help="share of training utterances with their formants scaled (vocal-tract length, "
                        f"x{alpha_lo:g}-{alpha_hi:g}; default {d.p_vtlp:g})")
    parser.add_argument("--pitch", type=float, default=d.p_pitch, metavar="P",
                        help="share of training utterances with their pitch moved, formants kept "
                        f"({semitones_lo:+g} to {semitones_hi:+g} semitones; default {d.p_pitch:g})")
    parser.add_argument("--prompts", type=float, default=d.prompts_share, metavar="P",
                        help="share of training utterances drawn from recorded human speech, the Asterisk "
                        f"prompts Debian ships (lipstream.training.prompts; default {d.prompts_share:g})")
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--export", type=Path, default=None, help="ONNX path (default: RUN_DIR/motion.onnx)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last validation (same options)")
    parser.add_argument("--install", action="store_true",
                        help="also copy the ONNX and its metadata into the package as the shipped model")
    fit = FitPlan()
    parser.add_argument("--calibrate-utterances", type=int, default=fit.utterances, metavar="N",
                        help="then fit the model's calibration on N synthetic held-out utterances (seed "
                        f"{fit.seed}, never the benchmark's) as `python -m lipstream.training.calibrate` "
                        f"does (default {fit.utterances}; 0 with --calibrate-prompts 0: the raw network)")
    parser.add_argument("--calibrate-prompts", type=int, default=fit.prompts, metavar="N",
                        help=f"and on N recorded Asterisk prompts drawn with that seed (default "
                        f"{fit.prompts}; they need asterisk-core-sounds-en, which `./run setup` installs)")
    parser.add_argument("--calibrate-gains", type=float, nargs=N_CONTROLS, metavar="G",
                        help="keep these calibration gains and fit only the offsets (calibrate --gains)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config, refused (one line, before minutes of corpus synthesis) if out of range."""
    if args.val_every < 1:
        raise ConfigError(f"--val-every {args.val_every}: use a number of steps of at least 1")
    cfg = replace(DEFAULTS, steps=args.steps, seed=args.seed, context_ms=args.context_ms,
              lookahead_ms=args.lookahead_ms, batch_size=args.batch_size, threads=args.threads,
              pool_utterances=args.pool_utterances, val_utterances=args.val_utterances,
              val_every=min(args.val_every, args.steps), velocity_weight=args.velocity_weight,
              spread_weight=args.spread_weight, channels=args.channels, dilations=tuple(args.dilations),
              lr=args.lr, init_from=args.init_from, p_vtlp=args.vtlp, p_pitch=args.pitch,
              prompts_share=args.prompts)
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Each option a run cannot use, as the option and the range it needs."""
    for option, value, ok, need in (
            ("--steps", cfg.steps, cfg.steps >= 1, "at least 1"),
            ("--seed", cfg.seed, seed_problem(cfg.seed) is None, "a whole number from 0"),
            ("--batch-size", cfg.batch_size, cfg.batch_size >= 1, "at least 1"),
            ("--threads", cfg.threads, cfg.threads >= 1, "at least 1"),
            ("--pool-utterances", cfg.pool_utterances, cfg.pool_utterances >= 1, "at least 1"),
            ("--val-utterances", cfg.val_utterances, cfg.val_utterances >= 1, "at least 1"),
            ("--lr", cfg.lr, 0 < cfg.lr < math.inf, "a number above 0"),
            ("--velocity-weight", cfg.velocity_weight, 0 <= cfg.velocity_weight < math.inf, "0 or more"),
            ("--spread-weight", cfg.spread_weight, 0 <= cfg.spread_weight < math.inf, "0 or more"),
            ("--vtlp", cfg.p_vtlp, 0 <= cfg.p_vtlp <= 1, "a share from 0 to 1"),
            ("--pitch", cfg.p_pitch, 0 <= cfg.p_pitch <= 1, "a share from 0 to 1"),
            ("--prompts", cfg.prompts_share, 0 <= cfg.prompts_share <= 1, "a share from 0 to 1"),
            ("--channels", cfg.channels, cfg.channels >= 1, "at least 1"),
            ("--dilations", " ".join(map(str, cfg.dilations)), min(cfg.dilations) >= 1, "each at least 1"),
            ("--context-ms", cfg.context_ms, cfg.context_ms >= HOP_MS and cfg.context_ms % HOP_MS == 0,
             f"a multiple of {HOP_MS} ms, at least {HOP_MS}"),
            ("--lookahead-ms", cfg.lookahead_ms, cfg.lookahead_ms >= 0 and cfg.lookahead_ms % HOP_MS == 0,
             f"a multiple of {HOP_MS} ms, 0 or more")):
        if not ok:
            raise ConfigError(f"{option} {value}: use {need}")
    _check_window(cfg.model_config(), cfg.crop_frames)
    check_step_memory(cfg.model_config(), cfg.batch_size, cfg.crop_frames)


def _check_window(model: ModelConfig, crop_frames: int) -> None:
    """The window (context + lookahead) must cover the conv stack and fit in a training crop."""
    low_ms, high_ms = model.stack_field * HOP_MS, crop_frames * HOP_MS
    if not model.stack_field <= model.window_frames <= crop_frames:
        raise ConfigError(f"--context-ms plus --lookahead-ms is {model.window_frames * HOP_MS} ms: with "
                          f"these --dilations it must be {low_ms} to {high_ms} ms")


def check_outputs(out_dir: Path, export: Path) -> None:
    """Fail before training if the run directory or the ONNX file could not be written."""
    if export.is_dir():
        raise ConfigError(f"--export {export} is a folder: give a file name such as motion.onnx")
    for folder in (out_dir, export.parent):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"{existing} is a file, not a folder: choose another --out or --export")


def fit_plan_from_args(args: argparse.Namespace) -> FitPlan | None:
    """The calibration the run ends with (None: none), refused before training if it cannot be fitted."""
    gains = None if args.calibrate_gains is None else tuple(args.calibrate_gains)
    plan = FitPlan(args.calibrate_utterances, args.calibrate_prompts, gains=gains)
    if plan.utterances == plan.prompts == 0 and gains is None:
        return None
    if problem := plan.problem(options="--calibrate-"):
        raise ConfigError(problem)
    if plan.prompts:
        from lipstream.training.prompts import PACKAGES, TRANSCRIPTS

        if not TRANSCRIPTS.is_file():
            raise ConfigError(f"--calibrate-prompts {plan.prompts} needs the Asterisk prompts: "
                              f"apt-get install {PACKAGES} (or --calibrate-prompts 0)")
    return plan


def _calibrated(path: Path, plan: FitPlan) -> dict[str, Any]:
    """Fit and store `plan`'s calibration in the exported file; its gains and offsets."""
    try:
        fit: dict[str, Any] = calibrate_file(path, plan, store=True)["fit"]
    except SpeechEngineError as exc:  # after the training: say where its result is
        raise SpeechEngineError(f"{exc}; the trained network is in {path}, not calibrated: "
                                f"{plan.command(model=path)}") from exc
    return fit


def run_train(args: argparse.Namespace, source: UtteranceSource | None = None) -> int:
    import torch

    from lipstream.training.export import check_export, export_onnx, install, model_metadata
    from lipstream.training.model import ModelConfig, MotionNet

    cfg = config_from_args(args)
    plan = fit_plan_from_args(args)
    path = args.export or args.out / "motion.onnx"
    check_outputs(args.out, path)
    summary = train(cfg, args.out, source=source, resume=args.resume)
    checkpoint = torch.load(args.out / "checkpoint.pt", weights_only=True)
    net = MotionNet(ModelConfig.from_dict(checkpoint["model_config"]))
    net.load_state_dict(checkpoint["state_dict"])
    extra = {"command": summary["command"], "corpus": summary["corpus"], "metrics": summary["metrics"],
             "training": {"steps": cfg.steps, "seed": cfg.seed, "wall_s": summary["wall_s"],
                          "final_train_loss": summary["final_train_loss"]}}
    export_onnx(net.eval(), path, model_metadata(net, extra))
    check = check_export(net, path)
    summary["export"] = {"path": str(path), **check}
    if plan is not None:  # the calibration the shipped model carries, fitted on the exported file
        summary["calibration"] = _calibrated(path, plan)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"metrics": summary["metrics"], "export": summary["export"],
                      "calibration": summary.get("calibration"), "wall_s": summary["wall_s"]}, indent=1))
    if args.install:
        import lipstream.models

        print(f"installed {install(path, Path(lipstream.models.__file__).parent)}")
    return 0
