"""Photo decoding: bytes, a file or an array -> (H, W, 3) uint8 RGB, upright per EXIF.

The one decoder of the engine and the server: every way a photo can be refused ends as a PhotoError
with one line a user can act on. Photos come from strangers (uploads), so the pixel count is checked
from the header before anything is decoded, and only the formats a camera or editor writes are opened.
"""

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lipstream.engine.inputfile import check_input_file
from lipstream.errors import PhotoError

Photo = bytes | str | Path | np.ndarray
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # JPEG includes MPO, which some phone cameras write
PIXELS_PER_MEGAPIXEL = 1_000_000
# Pillow's own bomb limit: it refuses such images in Image.open, before our header check can run
PILLOW_LIMIT_MEGAPIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 0) / PIXELS_PER_MEGAPIXEL
# What Pillow's plugins raise on damaged or hostile input, besides OSError
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)
HINT = "use a JPEG or PNG photo"
BITS_DROPPED_FROM_16 = 16 - 8  # a 16-bit sample to the 8 bits of our RGB


def decode_photo(photo: Photo, name: str, max_megapixels: float, min_side_px: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright per EXIF. Raises PhotoError.

    min_side_px > 0 lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's draft mode: a fraction
    of the time and memory of a full decode) while both sides stay at least min_side_px.
    """
    if isinstance(photo, np.ndarray):
        return as_rgb(photo)
    if isinstance(photo, (str, Path)):
        check_input_file(photo, "photo", PhotoError)
    source = io.BytesIO(photo) if isinstance(photo, bytes) else Path(photo)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is lower
            with Image.open(source, formats=FORMATS) as image:  # lazy: reads the header only
                return _decode(image, name, max_megapixels, min_side_px)
    except Image.DecompressionBombError:
        raise PhotoError(_too_large(name, f"over {PILLOW_LIMIT_MEGAPIXELS:.0f} MP", max_megapixels)) from None
    except UnidentifiedImageError:
        raise PhotoError(f"cannot read {name} as an image (it is not an image, or not one of "
                         f"{', '.join(FORMATS)}): {HINT}") from None
    except _DECODE_ERRORS as err:
        raise PhotoError(f"cannot decode {name}, it looks damaged or truncated ({_reason(err)}): "
                         f"{HINT}") from None


def _decode(image: Image.Image, name: str, max_megapixels: float, min_side_px: int) -> np.ndarray:
    width, height = image.size
    megapixels = width * height / PIXELS_PER_MEGAPIXEL
    if megapixels > max_megapixels:
        raise PhotoError(_too_large(name, f"{width}x{height} ({megapixels:.0f} MP)", max_megapixels))
    if min_side_px > 0:
        image.draft("RGB", (min_side_px, min_side_px))  # a no-op for formats other than JPEG
    # Each step copies only when it has something to do: a copy of a 49 MP photo costs ~0.1 s.
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode.startswith("I;16"):  # 16-bit grey: Pillow's convert clips it at 255, to white
        return as_rgb(np.asarray(image))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.asarray(rgb)


def _too_large(name: str, dims: str, limit: float) -> str:
    return f"{name} is {dims}, over the {limit:g}-megapixel limit: scale it down first"


def _reason(err: Exception) -> str:
    """Pillow's first line, without object reprs (they carry addresses, not news for a user)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if "<" not in text else type(err).__name__


def as_rgb(array: np.ndarray) -> np.ndarray:
    """Grey, RGB or RGBA of any numeric dtype (floats in [0, 1] or [0, 255], uint16 over its whole
    range) -> (H, W, 3) uint8."""
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # a 16-bit photo: keep the top 8 bits
        array = (array >> BITS_DROPPED_FROM_16).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.size == 0:
        raise PhotoError(f"image array has shape {array.shape}: expected (H, W, 3) RGB")
    if array.dtype.kind not in "uif":
        raise PhotoError(f"image array has dtype {array.dtype}: expected uint8 or float RGB")
    if array.dtype != np.uint8:
        finite = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        finite *= 255.0 if finite.max() <= 1.0 else 1.0
        array = np.clip(finite, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])
