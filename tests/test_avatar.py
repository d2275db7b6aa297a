"""Avatar analysis: any photo that shows a usable face works; every other photo is a clear error."""

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lipstream.engine.avatar import Avatar, AvatarConfig
from lipstream.engine.faceframe import CHIN, FOREHEAD
from lipstream.errors import ConfigError, PhotoError


def _eye_line_angle(avatar: Avatar) -> float:
    dx, dy = avatar.landmarks[263] - avatar.landmarks[33]
    return float(np.degrees(np.arctan2(dy, dx)))


def test_default_avatar_is_the_astronaut_cropped_around_the_head() -> None:
    avatar = Avatar.default()
    assert avatar.image.shape == (512, 512, 3) and avatar.image.dtype == np.uint8
    assert avatar.landmarks.shape == (478, 2)
    face_height = avatar.landmarks[CHIN, 1] - avatar.landmarks[FOREHEAD, 1]
    assert 0.35 * 512 < face_height < 0.65 * 512  # room for hair, chin and neck
    assert abs(_eye_line_angle(avatar)) < 10
    assert Avatar.default() is avatar  # analysed once per process
    assert not avatar.image.flags.writeable  # shared by sessions: nobody may paint on it


def test_output_size_is_a_setting() -> None:
    avatar = Avatar.from_image(data.astronaut(), AvatarConfig(size=256))
    assert avatar.image.shape == (256, 256, 3)
    assert avatar.landmarks[:, 0].max() < 256


@pytest.mark.parametrize("settings", [{"size": 97}, {"size": 0}, {"size": -2}, {"size": 10_000},
                                      {"crop_scale": 0.0}, {"crop_scale": float("nan")}])
def test_settings_no_frame_can_have_are_refused_at_once(settings: dict[str, float]) -> None:
    """An odd size made an avatar whose first frame died in OpenCV's I420 conversion; 0 divided by zero."""
    with pytest.raises(ConfigError, match=f"^AvatarConfig {next(iter(settings))} "):
        AvatarConfig(**settings)  # type: ignore[arg-type]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    sideways = np.rot90(data.astronaut())  # stored turned 90 degrees counter-clockwise
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes the turn
    Image.fromarray(np.ascontiguousarray(sideways)).save(path, exif=exif, quality=95)
    avatar = Avatar.from_image(path)
    assert abs(_eye_line_angle(avatar)) < 10


@pytest.mark.parametrize("name", ["portrait-obama.jpg", "portrait-biden.jpg", "small-240p.jpg"])
def test_shared_photos_are_analysed(shared_faces: Path, name: str) -> None:
    avatar = Avatar.from_image(shared_faces / name)
    face_height = avatar.landmarks[CHIN, 1] - avatar.landmarks[FOREHEAD, 1]
    assert 0.35 * 512 < face_height < 0.65 * 512
    assert abs(_eye_line_angle(avatar)) < 20


def test_two_faces_uses_the_larger_with_a_warning(shared_faces: Path) -> None:
    with pytest.warns(UserWarning, match="2 faces found in two-faces.jpg: using the largest"):
        avatar = Avatar.from_image(shared_faces / "two-faces.jpg")
    assert avatar.image.shape == (512, 512, 3)


def test_cut_off_face_renders_or_is_refused_clearly(shared_faces: Path) -> None:
    try:
        avatar = Avatar.from_image(shared_faces / "partial-face.jpg")
    except PhotoError as err:
        assert "partial-face.jpg" in str(err) and "cut off" in str(err)
    else:
        assert avatar.image.shape == (512, 512, 3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="photo not found: .*nowhere.jpg"):
        Avatar.from_image(tmp_path / "nowhere.jpg")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels")
    with pytest.raises(PhotoError, match="cannot read notes.jpg as an image"):
        Avatar.from_image(path)


@pytest.mark.parametrize("pixels", [
    np.full((400, 400, 3), 128, np.uint8),  # flat grey
    np.ascontiguousarray(data.astronaut()[260:, :]),  # the astronaut's suit, no face
])
def test_no_face(pixels: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    Image.fromarray(pixels).save(path)
    with pytest.raises(PhotoError, match="no face found in empty.png: use a frontal photo"):
        Avatar.from_image(path)


def test_tiny_face(tmp_path: Path) -> None:
    small = Image.fromarray(data.astronaut()).resize((224, 224), Image.Resampling.LANCZOS)
    padded = Image.new("RGB", (448, 448), (200, 200, 200))
    padded.paste(small, (112, 112))
    path = tmp_path / "tiny.png"
    padded.save(path)
    with pytest.raises(PhotoError, match=r"tiny.png .*px tall"):
        Avatar.from_image(path)


def _header_only_png(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height but carries almost no pixel data: cheap to make."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)  # truncated: decoding it fully would fail
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [8000, 20000])  # over our limit; over Pillow's own bomb limit
def test_huge_image_refused_from_its_header(tmp_path: Path, side: int) -> None:
    path = tmp_path / "huge.png"
    _header_only_png(path, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks out either
        with pytest.raises(PhotoError, match="huge.png is .*over the 50-megapixel limit"):
            Avatar.from_image(path)


def test_mouth_cut_off_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "no-chin.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:160])).save(path)  # cut through the lips
    with pytest.raises(PhotoError, match="mouth or chin in no-chin.png is cut off by the photo's edge"):
        Avatar.from_image(path)
