"""ONNX export of a trained MotionNet, with its metadata inside the file and in a sidecar .json.

The metadata (see `lipstream.engine.runners.check_metadata`) carries what the engine needs to
run the file (window size, mel settings) and what a person needs to trust it (corpus, metrics,
the command that made it). Model dimensions travel with the weights, never beside them in code.
"""

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lipstream.engine.constants import HOP_MS
from lipstream.engine.controls import CONTROL_NAMES, N_CONTROLS, N_VISEMES, VISEMES
from lipstream.engine.motion import SHIPPED_MODEL
from lipstream.engine.runners import INPUT_NAME, METADATA_KEY, MODEL_FORMAT, OUTPUT_NAMES, mel_settings
from lipstream.errors import ModelError
from lipstream.training.model import MotionNet, WindowMotionNet, count_parameters

OPSET = 17


def model_metadata(net: MotionNet, extra: dict[str, Any]) -> dict[str, Any]:
    cfg = net.config
    return {
        "format": MODEL_FORMAT,
        "name": f"motionnet-la{cfg.lookahead_frames * HOP_MS}ms",
        "context_frames": cfg.context_frames,
        "lookahead_frames": cfg.lookahead_frames,
        "context_ms": cfg.context_frames * HOP_MS,
        "lookahead_ms": cfg.lookahead_frames * HOP_MS,
        "mel": mel_settings(),
        "outputs": {"controls": N_CONTROLS, "visemes": N_VISEMES,
                    "control_names": list(CONTROL_NAMES), "viseme_names": list(VISEMES)},
        "target": "controls/viseme at the centre of the window's own last hop (mel frame t, t+0.5 hops)",
        "model": {**cfg.to_dict(), "parameters": count_parameters(net)},
        "normalisation": {"where": "inside the graph: (mel - mean) / std per mel bin",
                          "mean": [round(float(v), 5) for v in net.mel_mean],
                          "std": [round(float(v), 5) for v in net.mel_std]},
        **extra,
    }


def export_onnx(net: MotionNet, path: Path, metadata: dict[str, Any]) -> None:
    """Write `path` (.onnx, opset 17, dynamic batch) and `path.with_suffix('.json')`."""
    import onnx

    window = WindowMotionNet(net).eval()
    example = torch.zeros(1, net.config.window_frames, net.mel_mean.numel())
    buffer = io.BytesIO()
    torch.onnx.export(window, (example,), buffer, opset_version=OPSET, input_names=[INPUT_NAME],
                      output_names=list(OUTPUT_NAMES), dynamo=False,
                      dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)})
    proto = onnx.load_from_string(buffer.getvalue())
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")


def set_metadata(proto: Any, metadata: dict[str, Any]) -> None:
    """Replace an ONNX ModelProto's metadata with ours, as one JSON entry under METADATA_KEY."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)


def install(path: Path, models_dir: Path) -> Path:
    """Copy an exported model and its sidecar into the package's models folder as motion.onnx,
    the pair whole or not at all: every later command loads this file, so a full disk or a crash
    mid-copy must leave the old pair, never a new graph beside a truncated sidecar."""
    target = models_dir / SHIPPED_MODEL
    # The sidecar first, the ONNX last: the engine reads the metadata from the ONNX itself
    # (runners.read_metadata), so its rename is the one that switches models.
    moves = [(path.with_suffix(".json"), target.with_suffix(".json")), (path, target)]
    staged: list[Path] = []
    try:
        for source, dest in moves:
            staged.append(_staged_copy(source, dest))
        for copy, (_, dest) in zip(staged, moves, strict=True):
            os.replace(copy, dest)  # atomic within one folder
        _sync_folder(models_dir)
    except OSError as exc:
        for copy in staged:
            copy.unlink(missing_ok=True)
        raise ModelError(f"cannot install the model into {models_dir}: {exc.strerror or exc} "
                         f"(the shipped model is unchanged; {path} is the new one)") from None
    return target


def _staged_copy(source: Path, dest: Path) -> Path:
    """`source` copied to a hidden temporary file beside `dest` (same folder: the rename is
    atomic), flushed to disk so that a crash after the rename cannot leave it empty."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    copy = Path(name)
    try:
        shutil.copyfile(source, copy)
        shutil.copymode(source, copy)  # mkstemp's 0600 would hide the model from other users
        with copy.open("rb+") as written:
            os.fsync(written.fileno())
    except OSError:
        copy.unlink(missing_ok=True)
        raise
    return copy


def _sync_folder(folder: Path) -> None:
    """Make the renames themselves durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_export(net: MotionNet, path: Path, windows: int = 64, seed: int = 0) -> dict[str, float]:
    """Largest torch-vs-onnxruntime difference on random windows, and one-thread ms per frame."""
    import time

    import numpy as np

    from lipstream.engine.runners import OnnxRunner, TorchRunner

    rng = np.random.default_rng(seed)
    mel = (rng.standard_normal((windows, net.config.window_frames, net.mel_mean.numel())) * 1.5
           + net.mel_mean.numpy()).astype(np.float32)
    onnx_runner = OnnxRunner(path, threads=1)
    ours, theirs = onnx_runner.run(mel), TorchRunner(WindowMotionNet(net)).run(mel)
    diff = max(float(np.abs(ours.controls - theirs.controls).max()),
               float(np.abs(ours.visemes - theirs.visemes).max()))
    for i in range(20):  # burn-in
        onnx_runner.run(mel[i : i + 1])
    start, n = time.perf_counter(), 300
    for i in range(n):
        onnx_runner.run(mel[i % windows : i % windows + 1])
    ms_per_frame = (time.perf_counter() - start) / n * 1e3
    return {"max_abs_diff_torch_onnx": diff, "onnx_ms_per_frame_1thread": ms_per_frame,
            "size_mb": round(path.stat().st_size / 1e6, 3)}
