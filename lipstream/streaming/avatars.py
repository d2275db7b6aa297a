"""Avatars a server can animate: the default one and uploaded photos, analysed once, shared.

An `Avatar` is immutable after analysis, so every session using it shares one copy. Uploads are
decoded and analysed in their own one-thread pool with a short queue: a burst of big photos waits
there (or is turned away) instead of taking the render threads that live sessions need.
"""

import asyncio
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lipstream.errors import LipstreamError
from lipstream.streaming.memory import release_free_memory
from lipstream.streaming.worker import RenderPool

if TYPE_CHECKING:
    from lipstream.engine.avatar import Avatar
else:
    Avatar = Any

__all__ = ["DEFAULT_ID", "PREVIEW_CONTENT_TYPE", "Avatar", "AvatarStore", "UploadLimits", "UploadsBusy",
           "analyse_photo", "preview_jpeg"]

DEFAULT_ID = "default"
UPLOAD_NAME = "the uploaded photo"
PREVIEW_CONTENT_TYPE = "image/jpeg"
PREVIEW_JPEG_QUALITY = 90  # a 512 px crop is ~40 KB: the page shows it once per photo


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024  # a phone photo is 2-8 MB
    max_avatars: int = 32  # uploads kept; the oldest is forgotten first
    max_waiting: int = 2  # uploads queued behind the one being analysed; more are answered 503
    retry_after_s: int = 2  # a 49 MP photo takes ~1 s here to decode and analyse
    # The pixel limit is the avatar's own (AvatarConfig.max_megapixels), checked from the header.


class UploadsBusy(LipstreamError):
    """The upload queue is full: the client should retry after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server is busy analysing other photos: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def analyse_photo(data: bytes) -> Avatar:
    """Upload bytes -> Avatar. Raises PhotoError."""
    from lipstream.engine.avatar import Avatar

    try:
        return Avatar.from_image(data, name=UPLOAD_NAME)
    finally:
        # glibc otherwise keeps a decoded photo's freed buffers in the upload thread's arena
        # (benchmarks/uploads.py: three 49 MP uploads left RSS 66 MB up without this, 12 MB with it)
        release_free_memory()


def preview_jpeg(avatar: Avatar) -> bytes:
    """The crop the avatar animates, as the page shows it before a session starts (JPEG bytes)."""
    import cv2

    bgr = np.ascontiguousarray(avatar.image[:, :, ::-1])  # cv2 encodes BGR
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2 could not encode the avatar preview")
    return encoded.tobytes()


class UploadPool:
    """One thread and a bounded queue for photo analysis, apart from the render pool."""

    def __init__(self, limits: UploadLimits) -> None:
        self._limits = limits
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lipstream-upload")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    async def run(self, data: bytes) -> Avatar:
        with self._lock:
            if self._admitted > self._limits.max_waiting:
                raise UploadsBusy(self._limits.retry_after_s)
            self._admitted += 1
        job = self._executor.submit(analyse_photo, data)
        # counted until the thread is done with it, even if the request that sent it is gone
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _release(self, _: "Future[Avatar]") -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class AvatarStore:
    def __init__(self, load_default: Callable[[], Avatar], pool: RenderPool,
                 limits: UploadLimits | None = None) -> None:
        self.limits = limits or UploadLimits()
        self._load_default = load_default
        self._pool = pool  # only for the default avatar, analysed once at start-up
        self._uploads = UploadPool(self.limits)
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
        """Analyse an uploaded photo -> its id. Raises PhotoError, or UploadsBusy when queued full."""
        avatar = await self._uploads.run(data)
        avatar_id = secrets.token_urlsafe(9)
        self._avatars[avatar_id] = avatar
        uploads = [k for k in self._avatars if k != DEFAULT_ID]
        for old in uploads[: max(len(uploads) - self.limits.max_avatars, 0)]:
            del self._avatars[old]
        return avatar_id

    def close(self) -> None:
        """Stop the upload thread (waits for the photo in progress). Idempotent."""
        self._uploads.shutdown()
