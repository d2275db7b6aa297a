"""Avatars a server can animate: the default one and uploaded photos, analysed once, shared.

An `Avatar` is immutable after analysis, so every session using it shares one copy. Uploads are
decoded and analysed in a worker thread (FaceMesh takes tens of milliseconds), never on the loop.
"""

import io
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lipstream.errors import PhotoError
from lipstream.streaming.worker import RenderPool

if TYPE_CHECKING:
    from lipstream.engine.avatar import Avatar
else:
    Avatar = Any

__all__ = ["DEFAULT_ID", "Avatar", "AvatarStore", "UploadLimits", "analyse_photo", "decode_photo"]

DEFAULT_ID = "default"


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024  # a phone photo is 2-8 MB
    max_avatars: int = 32  # uploads kept; the oldest is forgotten first
    # The pixel limit is the avatar's own (AvatarConfig.max_megapixels), checked from the header.


def decode_photo(data: bytes, max_megapixels: float) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 RGB, upright per EXIF. Raises PhotoError with the reason."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise PhotoError("the upload is not an image PIL can read: send a JPEG or PNG photo") from None
    width, height = image.size  # from the header: nothing decoded yet
    if width * height > max_megapixels * 1e6:
        raise PhotoError(f"photo is {width}x{height} ({width * height / 1e6:.0f} MP); the limit is "
                         f"{max_megapixels:.0f} MP: downscale it")
    try:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError) as exc:
        raise PhotoError(f"cannot decode the photo ({exc}): send a JPEG or PNG photo") from None
    return np.asarray(upright)


def analyse_photo(data: bytes) -> Avatar:
    from lipstream.engine.avatar import AvatarConfig, analyse

    config = AvatarConfig()
    return analyse(decode_photo(data, config.max_megapixels), "the uploaded photo", config)


class AvatarStore:
    def __init__(self, load_default: Callable[[], Avatar], pool: RenderPool,
                 limits: UploadLimits | None = None) -> None:
        self.limits = limits or UploadLimits()
        self._load_default = load_default
        self._pool = pool
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()

    async def default(self) -> Avatar:
        if DEFAULT_ID not in self._avatars:
            avatar, _ = await self._pool.run(self._load_default)
            self._avatars[DEFAULT_ID] = avatar
        return self._avatars[DEFAULT_ID]

    async def get(self, avatar_id: str | None) -> Avatar | None:
        if avatar_id is None or avatar_id == DEFAULT_ID:
            return await self.default()
        return self._avatars.get(avatar_id)

    async def add(self, data: bytes) -> str:
        """Analyse an uploaded photo -> its id. Raises PhotoError."""
        avatar, _ = await self._pool.run(lambda: analyse_photo(data))
        avatar_id = secrets.token_urlsafe(9)
        self._avatars[avatar_id] = avatar
        uploads = [k for k in self._avatars if k != DEFAULT_ID]
        for old in uploads[: max(len(uploads) - self.limits.max_avatars, 0)]:
            del self._avatars[old]
        return avatar_id
