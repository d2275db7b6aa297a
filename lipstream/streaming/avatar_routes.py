"""Routes of avatars: `POST /v1/avatars` (a photo upload) and `GET /v1/avatars/{id}/preview`."""

import asyncio

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from lipstream.errors import PhotoError
from lipstream.streaming.api import READ_CHUNK_BYTES, ApiError, authorize, body_pace, read_body
from lipstream.streaming.avatars import PREVIEW_CONTENT_TYPE, UploadsBusy, preview_jpeg
from lipstream.streaming.bodies import BodyPace

RAW_BYTES = "application/octet-stream"
MALFORMED_FORM = ("malformed multipart/form-data body: send the form as a browser or HTTP library writes "
                  "it (a boundary of at most 70 characters in the Content-Type, parts framed by it)")


def add_avatar_routes(app: web.Application) -> None:
    app.router.add_post("/v1/avatars", post_avatar)
    app.router.add_get("/v1/avatars/{id}/preview", get_avatar_preview)


async def post_avatar(request: web.Request) -> web.Response:
    state = authorize(request)
    data = await _read_photo(request, state.avatars.limits.max_bytes)
    try:
        avatar_id = await state.avatars.add(data)
    except PhotoError as exc:
        raise ApiError(422, str(exc)) from None
    except UploadsBusy as exc:
        raise ApiError(503, str(exc), {"Retry-After": str(exc.retry_after_s)}) from None
    return web.json_response({"id": avatar_id}, status=201,
                             headers={"Location": f"/v1/avatars/{avatar_id}"})


async def get_avatar_preview(request: web.Request) -> web.Response:
    """The face crop an avatar animates ("default" included): the page shows it before Start."""
    state = authorize(request)
    avatar_id = request.match_info["id"]
    avatar = await state.avatars.get(avatar_id)
    if avatar is None:
        raise ApiError(404, f"no avatar {avatar_id}: it was never uploaded, or the server has "
                            "forgotten it (it keeps the latest uploads): upload the photo again")
    body = await asyncio.to_thread(preview_jpeg, avatar)
    return web.Response(body=body, content_type=PREVIEW_CONTENT_TYPE)


async def _read_photo(request: web.Request, limit: int) -> bytes:
    """A raw image body, or the first file part of a multipart form (a browser's <input type=file>).

    Refuses text/plain, form-encoded and untyped bodies: a web page can send those to any site
    without a CORS preflight. application/octet-stream needs one, and is what the page sends for
    a file the browser could not type.
    """
    declared = request.headers.get("Content-Type", "")
    if declared and request.content_type == "multipart/form-data":
        async with body_pace(request, "the photo") as pace:
            data = await _read_file_part(request, limit, pace)
    elif declared and (request.content_type.startswith("image/") or request.content_type == RAW_BYTES):
        data = await read_body(request, limit, "the photo")
    else:
        got = request.content_type if declared else "none"
        raise ApiError(415, f"a photo upload needs Content-Type image/* (got {got}), "
                            "or a multipart/form-data form with the photo as a file field")
    if not data:
        raise ApiError(400, "the upload is empty: send a JPEG or PNG photo")
    return data


async def _read_file_part(request: web.Request, limit: int, pace: BodyPace) -> bytes:
    try:
        return await _file_part(request, limit, pace)
    # aiohttp's multipart reader on a form it cannot split; a part that runs to the end of the body
    # without its closing boundary trips an assert of its own ("Reading after EOF") instead
    except (ValueError, BadHttpMessage, AssertionError):
        raise ApiError(400, MALFORMED_FORM) from None


async def _file_part(request: web.Request, limit: int, pace: BodyPace) -> bytes:
    reader = await request.multipart()
    part = await pace.read(reader.next())
    while part is not None and not (isinstance(part, BodyPartReader) and part.filename):
        part = await pace.read(reader.next())
    if not isinstance(part, BodyPartReader):
        raise ApiError(400, "the form has no file: send the photo as a file field")
    data = bytearray()
    while chunk := await pace.read(part.read_chunk(READ_CHUNK_BYTES)):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the photo is larger than the limit of {limit // 1024} KB")
    return bytes(data)
