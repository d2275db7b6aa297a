"""POST /v1/avatars over real HTTP: only images are taken, every bad photo is a 4xx JSON reason, and
uploads run in their own bounded pool, never on the render threads live sessions need."""

import asyncio
import contextlib
import io
import logging
import threading
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from PIL import Image

from lipstream.engine.avatar import Avatar
from lipstream.streaming import avatars
from lipstream.streaming.avatars import UploadLimits
from lipstream.streaming.server import ServeConfig
from tests.serving import expect, publish, running_server, seams, serving, still_streaming
from tests.test_photo import header_only_png

CONFIG = ServeConfig(max_sessions=2, loopback_ice=False)
URL = "/v1/avatars"


@pytest.fixture(scope="module")
def photo(avatar: Avatar) -> bytes:
    out = io.BytesIO()
    Image.fromarray(avatar.image).save(out, format="JPEG")
    return out.getvalue()


pytestmark = pytest.mark.usefixtures("loopback")


@pytest.mark.parametrize(("side", "says"), [(8000, "8000x8000 (64 MP)"), (20000, "over 179 MP")])
async def test_a_photo_with_a_huge_header_is_a_422_with_the_limit(avatar: Avatar, side: int,
                                                                  says: str) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        body = header_only_png(side, side)
        async with http.post(server.url + URL, data=body, headers={"Content-Type": "image/png"}) as response:
            await expect(response, 422, says)
            assert "50-megapixel limit: scale it down" in (await response.json())["error"]


async def test_a_truncated_photo_is_a_422_saying_so(avatar: Avatar, photo: bytes) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        half = photo[: len(photo) // 2]
        async with http.post(server.url + URL, data=half, headers={"Content-Type": "image/jpeg"}) as response:
            await expect(response, 422, "damaged or truncated")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None,
                                          "application/json"])
async def test_bodies_a_page_could_send_cross_site_are_415(avatar: Avatar, photo: bytes,
                                                           content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    skip = [] if content_type else ["Content-Type"]
    async with running_server(CONFIG, **seams(avatar)) as server, \
            aiohttp.ClientSession(skip_auto_headers=skip) as http, \
            http.post(server.url + URL, data=photo, headers=headers) as response:
        await expect(response, 415, "Content-Type image/*")


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
async def test_raw_image_bodies_are_taken(avatar: Avatar, photo: bytes, content_type: str) -> None:
    """The page sends a file's own type, or application/octet-stream when the browser knows none
    (that type, unlike text/plain, needs a CORS preflight)."""
    headers = {"Content-Type": content_type}
    async with serving(CONFIG, avatar) as (server, http), \
            http.post(server.url + URL, data=photo, headers=headers) as response:
        assert response.status == 201, await response.text()
        assert await server.state.avatars.get((await response.json())["id"]) is not None


async def test_a_multipart_form_with_a_file_is_taken_and_one_without_is_400(avatar: Avatar,
                                                                            photo: bytes) -> None:
    async with serving(CONFIG, avatar) as (server, http):
        form = aiohttp.FormData()
        form.add_field("photo", photo, filename="me.jpg", content_type="image/jpeg")
        async with http.post(server.url + URL, data=form) as response:
            assert response.status == 201, await response.text()
        # a multipart form with no file, by hand: aiohttp 3.10 (pipecat extra) has no default_to_multipart
        fields = aiohttp.MultipartWriter("form-data")
        fields.append("no file here").set_content_disposition("form-data", name="note")
        async with http.post(server.url + URL, data=fields) as response:
            await expect(response, 400, "file field")


FORM = "multipart/form-data"
FILE_PART = b'Content-Disposition: form-data; name="photo"; filename="me.jpg"\r\n'


@pytest.mark.parametrize(("content_type", "body"), [
    (FORM, b"--zz\r\n" + FILE_PART + b"\r\nxx\r\n--zz--\r\n"),  # no boundary in the type
    (f"{FORM}; boundary=zz", b"not a form\r\n"),  # never opens with its boundary
    (f"{FORM}; boundary={'b' * 80}", b"xx"),  # a boundary over 70 characters
    (f"{FORM}; boundary=zz", b"--zz\r\n" + b"X-Header: v\r\n" * 200),  # more part headers than aiohttp takes
    (f"{FORM}; boundary=zz", b"--zz\r\nX-Note: v\r\n\r\nhello"),  # a part, unended, then none
])
async def test_a_form_that_cannot_be_split_into_parts_is_a_400_saying_so(
        avatar: Avatar, content_type: str, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp's multipart reader raises ValueError, BadHttpMessage or an AssertionError on these:
    each was once a 500."""
    caplog.set_level(logging.ERROR)
    async with serving(CONFIG, avatar) as (server, http):
        async with http.post(server.url + URL, data=body, headers={"Content-Type": content_type}) as response:
            await expect(response, 400, "malformed multipart/form-data")
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200  # and it serves on
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture
def held_uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """Uploads wait for the event before the real analysis; records the threads they ran on."""
    release, threads = threading.Event(), []
    real = avatars.analyse_photo

    def held(data: bytes) -> Avatar:
        threads.append(threading.current_thread().name)
        release.wait(30)
        return real(data)

    monkeypatch.setattr(avatars, "analyse_photo", held)
    yield release, threads
    release.set()


async def test_uploads_queue_apart_from_rendering_and_a_full_queue_is_503(
        avatar: Avatar, photo: bytes, held_uploads: tuple[threading.Event, list[str]]) -> None:
    release, threads = held_uploads
    limits = UploadLimits(max_waiting=1, retry_after_s=3)
    config = ServeConfig(max_sessions=2, loopback_ice=False, workers=1, uploads=limits)
    headers = {"Content-Type": "image/jpeg"}
    async with serving(config, avatar) as (server, http):
        live = await publish(server, http, np.zeros(16_000, np.float32))
        url = server.url + URL
        first, second = (asyncio.create_task(http.post(url, data=photo, headers=headers)) for _ in range(2))
        while not threads:  # the first is being analysed, the second waits behind it
            await asyncio.sleep(0.01)
        async with http.post(url, data=photo, headers=headers) as response:
            await expect(response, 503, "retry in 3 s")
            assert response.headers["Retry-After"] == "3"
        # a held upload holds no render thread: the one-worker session keeps streaming
        assert await still_streaming(live), "a pending upload stalled the live session"
        release.set()
        for task in (first, second):
            response = await task
            assert response.status == 201, await response.text()
            response.release()
        assert threads and all(name.startswith("lipstream-upload") for name in threads), threads
        await live.stop(http)


async def test_an_upload_whose_request_is_gone_still_holds_its_place_until_done(
        photo: bytes, held_uploads: tuple[threading.Event, list[str]]) -> None:
    """A cancelled request (client gone, server stopping) must not free a place its photo still
    takes: the bound is on the thread's work, not on the requests waiting for it."""
    release, threads = held_uploads
    pool = avatars.UploadPool(UploadLimits(max_waiting=0))
    try:
        first = asyncio.create_task(pool.run(photo))
        while not threads:
            await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(avatars.UploadsBusy):
            await pool.run(photo)
        release.set()
        for _ in range(500):  # the held analysis finishes and hands its place back
            with contextlib.suppress(avatars.UploadsBusy):
                assert await pool.run(photo) is not None
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the place was never handed back")
    finally:
        release.set()
        pool.shutdown()
