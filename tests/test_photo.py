"""The one photo decoder: every refusal is a PhotoError with a usable line; big JPEGs decode cheaply
without degrading the avatar."""

import io
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from lipstream.engine.avatar import SMALLEST_FACE_SHARE, Avatar, AvatarConfig, decode_side_px
from lipstream.engine.photo import decode_photo
from lipstream.errors import PhotoError

LIMIT_MP = AvatarConfig().max_megapixels


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.mark.parametrize("side", [8000, 20000])  # over our limit; over Pillow's own bomb limit
def test_a_huge_header_is_refused_before_decoding(side: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks out either
        with pytest.raises(PhotoError, match=r"^up.png is .*over the 50-megapixel limit: scale it down"):
            decode_photo(header_only_png(side, side), "up.png", LIMIT_MP)


def test_a_truncated_jpeg_is_refused_as_damaged() -> None:
    whole = jpeg(data.astronaut())
    with pytest.raises(PhotoError, match=r"^cannot decode up.jpg, it looks damaged or truncated .*PNG"):
        decode_photo(whole[: len(whole) // 2], "up.jpg", LIMIT_MP)


def test_a_png_with_a_bad_pixel_stream_is_refused_as_damaged() -> None:
    with pytest.raises(PhotoError, match="^cannot decode up.png, it looks damaged"):
        decode_photo(header_only_png(400, 300), "up.png", LIMIT_MP)


@pytest.mark.parametrize("payload", [b"not an image", b"", b"%PDF-1.4\n", b"GIF89a" + b"\0" * 32])
def test_bytes_that_are_no_photo_are_refused(payload: bytes) -> None:
    refusal = r"^cannot read up as an image \(it is not an image, .*\): use a JPEG or PNG photo$"
    with pytest.raises(PhotoError, match=refusal):
        decode_photo(payload, "up", LIMIT_MP)


def test_messages_carry_no_object_reprs() -> None:
    with pytest.raises(PhotoError) as caught:
        decode_photo(b"not an image", "up", LIMIT_MP)
    assert "0x" not in str(caught.value) and "<" not in str(caught.value)


@pytest.mark.parametrize("array", [
    np.zeros((4, 4, 2), np.uint8), np.zeros((4,), np.uint8), np.zeros((0, 0, 3), np.uint8),
    np.zeros((4, 4, 3), bool),
])
def test_arrays_of_the_wrong_shape_or_kind_are_refused(array: np.ndarray) -> None:
    with pytest.raises(PhotoError, match="^image array has"):
        decode_photo(array, "the image array", LIMIT_MP)


def test_arrays_of_grey_float_and_rgba_become_rgb_uint8() -> None:
    assert decode_photo(np.full((2, 3), 0.5), "a", LIMIT_MP).tolist() == [[[127] * 3] * 3] * 2
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert decode_photo(rgba, "a", LIMIT_MP).shape == (2, 2, 3)
    nan = np.full((2, 2, 3), np.nan)
    assert decode_photo(nan, "a", LIMIT_MP).dtype == np.uint8


def test_a_missing_file_is_named() -> None:
    with pytest.raises(PhotoError, match="^photo not found: .*nowhere.jpg"):
        decode_photo(Path("/nonexistent/nowhere.jpg"), "nowhere.jpg", LIMIT_MP)


def test_bytes_and_files_decode_alike_and_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    sideways = np.ascontiguousarray(np.rot90(data.astronaut()))
    path = tmp_path / "s.png"
    Image.fromarray(sideways).save(path, exif=exif)
    from_file = decode_photo(path, "s.png", LIMIT_MP)
    assert np.array_equal(from_file, data.astronaut())
    assert np.array_equal(decode_photo(path.read_bytes(), "s.png", LIMIT_MP), from_file)


def test_a_big_jpeg_decodes_small_but_never_below_the_side_asked() -> None:
    big = jpeg(cv2.resize(data.astronaut(), (2500, 2000), interpolation=cv2.INTER_CUBIC))
    assert decode_photo(big, "big.jpg", LIMIT_MP, 1000).shape == (1000, 1250, 3)  # half scale
    assert decode_photo(big, "big.jpg", LIMIT_MP, 1001).shape == (2000, 2500, 3)  # full: half is short
    small = jpeg(data.astronaut())
    assert decode_photo(small, "small.jpg", LIMIT_MP, 1000).shape == (512, 512, 3)


def _sharpness(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def test_an_avatar_from_a_reduced_decode_keeps_the_full_decodes_detail() -> None:
    """The astronaut's face at 1/8 of the short side, the smallest share decoding is sized for.

    Pixel differences would mostly measure where FaceMesh puts the crop (a 1 px shift alone is
    ~3 grey levels here), so this compares landmarks and detail (Laplacian variance) instead.
    """
    config = AvatarConfig()
    side_px = 4400  # decodes at half scale, 2200 px
    face_share = 106 / 512  # the astronaut's face height in its own photo
    scaled = int(side_px * SMALLEST_FACE_SHARE / face_share)
    photo = np.full((side_px, side_px, 3), 128, np.uint8)
    photo[:scaled, :scaled] = cv2.resize(data.astronaut(), (scaled, scaled), interpolation=cv2.INTER_CUBIC)
    encoded = jpeg(photo, quality=95)
    full = Avatar.from_image(decode_photo(encoded, "full", LIMIT_MP), config)
    reduced = Avatar.from_image(encoded, config)
    assert decode_photo(encoded, "x", LIMIT_MP, decode_side_px(config)).shape[0] == side_px // 2
    assert float(np.abs(reduced.landmarks - full.landmarks).mean()) < 1.5  # px of 512
    assert 0.9 < _sharpness(reduced.image) / _sharpness(full.image) < 1.1
    eighth = Avatar.from_image(decode_photo(encoded, "x", LIMIT_MP, side_px // 8), config)
    assert _sharpness(eighth.image) / _sharpness(full.image) < 0.6  # what too small a decode loses
