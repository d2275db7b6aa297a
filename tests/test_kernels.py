"""The CPU kernels agree with the numpy reference of their per-pixel math."""

import cv2
import numpy as np
import pytest
from skimage import data

from lipstream.kernels import get_kernels


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def warp_coords(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth warp with sub-pixel offsets, some rows far off the image, some exactly on pixels."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([xs * 1.7 + 300, ys * 1.3 + 150], -1)
    coords += rng.normal(0, 3, size=coords.shape).astype(np.float32)
    coords[:5] -= 400  # off the left and top: edge replication
    coords[-5:] += 600  # off the right and bottom
    coords[10:15] = np.round(coords[10:15])  # whole pixels: no interpolation at all
    return coords.astype(np.float32)


def test_warp_matches_reference(photo: np.ndarray) -> None:
    coords = warp_coords((120, 140), np.random.default_rng(0))
    cpu, ref = np.zeros((120, 140, 3), np.uint8), np.zeros((120, 140, 3), np.uint8)
    get_kernels("cpu").warp_region(photo, coords, cpu)
    get_kernels("reference").warp_region(photo, coords, ref)
    diff = np.abs(cpu.astype(int) - ref.astype(int))
    # OpenCV's bilinear weights are 5-bit fixed point: off by at most a couple of levels
    assert diff.max() <= 3
    assert diff.mean() < 0.6


def test_warp_writes_into_a_frame_region(photo: np.ndarray) -> None:
    frame = photo.copy()
    ys, xs = np.mgrid[100:200, 50:150].astype(np.float32)
    identity = np.stack([xs, ys], -1)
    get_kernels("cpu").warp_region(photo, identity, frame[100:200, 50:150])
    np.testing.assert_array_equal(frame, photo)


def test_composite_matches_reference(photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    colour = rng.uniform(0, 255, size=(64, 80, 3)).astype(np.float32)
    alpha = rng.uniform(-0.1, 1.1, size=(64, 80)).clip(0, 1).astype(np.float32)
    cpu, ref = photo[:64, :80].copy(), photo[:64, :80].copy()
    get_kernels("cpu").composite(cpu, colour, alpha)
    get_kernels("reference").composite(ref, colour, alpha)
    assert np.abs(cpu.astype(int) - ref.astype(int)).max() <= 1
    untouched = alpha == 0
    np.testing.assert_array_equal(cpu[untouched], photo[:64, :80][untouched])


def test_cpu_kernels_keep_opencv_to_one_thread() -> None:
    """Sessions run side by side on every core: OpenCV's own helper threads would only contend."""
    cv2.setNumThreads(4)
    get_kernels("cpu")
    assert cv2.getNumThreads() == 1


def test_unknown_device_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no kernels for device"):
        get_kernels("tpu")
