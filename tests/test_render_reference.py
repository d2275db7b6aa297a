"""Speed work on the renderer must not change what it draws: frames stay within a small tolerance of
reference frames rendered (and stored) before that work.

The reference holds, for a 256 px astronaut with head motion and blinks on, the parts of some frames
that move (the mouth region and the two eye regions) under speech-like controls. To regenerate it
after an intended change of the picture:  python tests/test_render_reference.py
"""

from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.render import RenderConfig, Renderer

REFERENCE = Path(__file__).parent / "data" / "render_reference.npz"
SIZE_PX = 256
FRAMES = 160
KEPT_EVERY = 32  # frames stored: every 32nd, and the deepest blink
MIN_PSNR_DB = 40.0
MAX_DIFF_LEVELS = 8


def speech_controls(frames: int) -> np.ndarray:
    """Jaw opening and closing at syllable rate, the other controls drifting (seeded)."""
    t = np.arange(frames) / 25.0
    jaw = np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t), 0.0, 1.0)
    other = np.random.default_rng(3).uniform(0.0, 0.6, size=(frames, 4))
    return np.column_stack([jaw, other]).astype(np.float32)


def moving_regions(avatar: Avatar) -> list[tuple[slice, slice]]:
    """The mouth region and both eye regions: all a frame changes besides the head's motion."""
    return [avatar.rig.roi.slices, *(region.roi.slices for region in avatar.eyes.regions)]


def render_kept() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(indices, crops): the kept frames' moving regions, by name ("region0" is the mouth)."""
    avatar = Avatar.default(AvatarConfig(size=SIZE_PX))
    renderer = Renderer(avatar, RenderConfig(), seed=0)
    frames = [renderer.render(c, i) for i, c in enumerate(speech_controls(FRAMES))]
    blinks = [renderer.blink_amount(i) for i in range(FRAMES)]
    indices = sorted({*range(0, FRAMES, KEPT_EVERY), int(np.argmax(blinks))})
    crops = {f"region{k}": np.stack([frames[i][box] for i in indices])
             for k, box in enumerate(moving_regions(avatar))}
    return np.array(indices), crops


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.skipif(not REFERENCE.exists(), reason="no stored reference frames")
def test_frames_match_the_stored_reference() -> None:
    stored = np.load(REFERENCE)
    indices, crops = render_kept()
    np.testing.assert_array_equal(indices, stored["indices"])
    assert stored["blink"] > 0.5, "the reference must hold a blink"
    for name, regions in crops.items():
        for index, got, want in zip(indices, regions, stored[name], strict=True):
            diff = np.abs(got.astype(int) - want.astype(int))
            assert psnr_db(got, want) >= MIN_PSNR_DB, (name, index, psnr_db(got, want))
            assert diff.max() <= MAX_DIFF_LEVELS, (name, index, diff.max())


def write_reference() -> None:
    indices, crops = render_kept()
    renderer = Renderer(Avatar.default(AvatarConfig(size=SIZE_PX)), RenderConfig(), seed=0)
    blink = max(renderer.blink_amount(i) for i in range(FRAMES))
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, indices=indices, blink=blink, **crops)
    print(f"written {REFERENCE}: frames {indices.tolist()}, {REFERENCE.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    write_reference()
