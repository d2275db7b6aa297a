"""Requests aiohttp cannot parse at all get a JSON 400 too, like every other refusal.

aiohttp answers a malformed request line or header itself, before any middleware runs, with a
text/plain body, and offers no hook for it (aiohttp issues #3287 and #9882 ask for one). Its
connection handler builds that answer in `RequestHandler.handle_error`; this module wraps that one
method, process-wide and once, so that a client error (4xx) becomes `{"error": ...}`. A 5xx, which
aiohttp also answers there, is left as aiohttp makes it.
"""

from http import HTTPStatus
from typing import Any

from aiohttp import web, web_protocol

_WRAPPED = "_lipstream_json_parse_errors"


def json_parse_errors() -> None:
    """Make aiohttp's own 4xx answers JSON (idempotent)."""
    handler_class: Any = web_protocol.RequestHandler
    if getattr(handler_class.handle_error, _WRAPPED, False):
        return
    original = handler_class.handle_error

    def handle_error(self: Any, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        response: web.StreamResponse = original(self, request, status, exc, message)
        if not 400 <= status < 500:
            return response
        reason = message or HTTPStatus(status).phrase
        answer = web.json_response({"error": f"malformed HTTP request ({reason}): send a valid "
                                             "HTTP/1.1 request line and headers"}, status=status)
        answer.force_close()  # as aiohttp's own: the connection's framing is lost
        return answer

    setattr(handle_error, _WRAPPED, True)
    handler_class.handle_error = handle_error
