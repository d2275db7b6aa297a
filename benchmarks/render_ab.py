"""The renderer of another commit against this tree's, on the same frames, interleaved in one process.

Speed work on the render is judged by ratios: on a shared machine a stage's absolute cost moves with
the load, but two renderers timed one after the other on every frame see the same load. REF's
`lipstream/` is copied (from git) under another import name, both renderers draw frame n with the
same controls (head motion, blinks, speech-like mouth) in alternating order, and each is timed with
this thread's CPU clock: the render, then its I420 picture as a session's producer reads it. Then
how far apart the frames are (the picture must not change: at most 1 grey level).

    python benchmarks/render_ab.py REF [--frames 300] [--size 512] [--out benchmarks/results/render_ab.json]
"""

import argparse
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from stages import BURN_IN, speech_like_controls  # noqa: E402

OLD_NAME = "lipstream_ab_old"  # the import name REF's package is loaded under
REPO = Path(__file__).resolve().parent.parent


def load_old(ref: str, into: Path) -> ModuleType:
    """REF's lipstream package, importable as OLD_NAME beside this tree's."""
    archive = subprocess.run(["git", "archive", ref, "lipstream"], capture_output=True, check=True,
                             cwd=REPO).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "lipstream").rename(into / OLD_NAME)
    for path in (into / OLD_NAME).rglob("*.py"):
        path.write_text(re.sub(r"\b(from|import) lipstream([. ])", rf"\1 {OLD_NAME}\2", path.read_text()))
    sys.path.insert(0, str(into))
    return importlib.import_module(OLD_NAME)


class Side:
    """One package's renderer and pictures, timed."""

    def __init__(self, package: str, size: int) -> None:
        avatar = importlib.import_module(f"{package}.engine.avatar")
        render = importlib.import_module(f"{package}.engine.render")
        self._picture: Any = importlib.import_module(f"{package}.engine.engine").Picture
        self.renderer = render.Renderer(avatar.Avatar.default(avatar.AvatarConfig(size=size)),
                                        render.RenderConfig(), seed=0)
        self.render_ms: list[float] = []
        self.total_ms: list[float] = []
        self._last: np.ndarray | None = None

    def frame(self, controls: np.ndarray, index: int, kept: bool) -> np.ndarray:
        """Frame index drawn and read as I420, as `Engine` and a session's producer do (a
        picture the renderer handed back again is not converted again)."""
        start = time.thread_time()
        image = self.renderer.render(controls, index)
        drawn = time.thread_time()
        if image is not self._last:
            self._last = image
            changes = getattr(self.renderer, "changes", None)  # what a frame changed (newer renderers)
            extra = {} if changes is None else {"changes": changes}
            self._picture(image, i420=False, **extra).yuv  # noqa: B018
        end = time.thread_time()
        if kept:
            self.render_ms.append((drawn - start) * 1e3)
            self.total_ms.append((end - start) * 1e3)
        return image


def compare(ref: str, frames: int, size: int) -> dict[str, Any]:
    sides = {"old": Side(OLD_NAME, size), "new": Side("lipstream", size)}
    differing_px, worst, blinking, moves, last_pose = 0, 0, 0, 0, None
    for index, controls in enumerate(speech_like_controls(frames + BURN_IN, seed=1)):
        kept = index >= BURN_IN
        order = ("old", "new") if index % 2 else ("new", "old")
        images = {name: sides[name].frame(controls, index, kept) for name in order}
        diff = np.abs(images["old"].astype(np.int16) - images["new"])
        pose = sides["new"].renderer.head_pose(index)
        if kept:
            differing_px += int((diff > 0).any(axis=-1).sum())
            worst = max(worst, int(diff.max()))
            blinking += sides["new"].renderer.blink_amount(index) > 0
            moves += pose != last_pose
        last_pose = pose
    stats = {f"{name} {what}": _stats(getattr(side, f"{what}_ms"))
             for name, side in sides.items() for what in ("render", "total")}
    return {"ref": ref, "frames": frames, "size": size, "blinking_frames": blinking, "head_moves": moves,
            "max_diff_levels": worst, "differing_pixels": differing_px, "cpu_ms": stats}


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.median(ms)), "mean": float(np.mean(ms))}


def report(result: dict[str, Any]) -> None:
    cpu = result["cpu_ms"]
    print(f"{result['frames']} frames at {result['size']} px ({result['blinking_frames']} blinking, "
          f"{result['head_moves']} head moves); thread CPU ms, {result['ref']} (old) vs this tree (new)")
    print(f"{'stage':<18}{'old p50':>9}{'new p50':>9}{'old mean':>10}{'new mean':>10}{'p50 ratio':>11}"
          f"{'mean ratio':>12}")
    for what, label in (("render", "render"), ("total", "render + I420")):
        old, new = cpu[f"old {what}"], cpu[f"new {what}"]
        print(f"{label:<18}{old['p50']:>9.3f}{new['p50']:>9.3f}{old['mean']:>10.3f}{new['mean']:>10.3f}"
              f"{new['p50'] / old['p50']:>11.3f}{new['mean'] / old['mean']:>12.3f}")
    print(f"frames apart: max {result['max_diff_levels']} grey levels, {result['differing_pixels']} "
          "pixels differ over all frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="git commit of the old renderer, e.g. main")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/render_ab.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as scratch:
        load_old(args.ref, Path(scratch))
        result = compare(args.ref, args.frames, args.size)
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
