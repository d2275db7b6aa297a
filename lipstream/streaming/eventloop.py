"""The event loop a server process runs on: uvloop's when it is installed, else asyncio's own.

A worker's event loop carries every session's RTP, RTCP, SRTP and ICE traffic (aiortc and aioice
are asyncio code, ~10 packets per session-frame) and the hand-offs from the render and encoder
threads. uvloop (libuv underneath; a dependency except on Windows, which it does not support) runs
the same asyncio code with less of the loop's own work in Python: ~10% of the loop thread's CPU,
~3% of a session's, in an A/B of four sessions (docs/profile.md, section 16).
`LIPSTREAM_EVENT_LOOP=asyncio` keeps asyncio's loop (to compare, or where uvloop misbehaves).
"""

import asyncio
import logging
import os

log = logging.getLogger(__name__)

ENV = "LIPSTREAM_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


def use_fast_event_loop() -> str:
    """Install uvloop's policy for the loops this process creates next (a server process, before
    aiohttp's `run_app` makes its loop); says which loop in one log line and returns its name."""
    name = _chosen_loop()
    log.info("lipstream event loop: %s", name)
    return name


def _chosen_loop() -> str:
    choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        log.warning("%s=%s is not one of %s: using auto", ENV, choice, ", ".join(CHOICES))
        choice = "auto"
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            log.warning("%s=uvloop but uvloop is not installed (pip install uvloop): "
                        "using asyncio's loop", ENV)
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
