"""The entry point of one worker process of `lipstream serve --workers N` (see workers.py).

The front writes `(index, ServeConfig, socket path, log level)` pickled to the worker's stdin and keeps the
pipe open. The worker serves the whole API on that unix socket, and shuts down as on SIGTERM
(closing its sessions) as soon as the pipe reaches end of file: the front has gone. Like the
front's own SIGTERM -> SIGKILL, that shutdown gets STOP_GRACE_S before the process ends anyway.
"""

import asyncio
import logging
import os
import pickle
import signal
import sys

from aiohttp import web

from lipstream.errors import LipstreamError
from lipstream.logs import warnings_as_log_lines
from lipstream.streaming.config import ServeConfig
from lipstream.streaming.memory import limit_arenas
from lipstream.streaming.server import quiet_ice_logs, serving_app
from lipstream.streaming.workers import STOP_GRACE_S

STDIN_FD = 0


def _exit_with_front(app: web.Application) -> None:
    """On EOF of stdin, signal ourselves as `kill` would: aiohttp then shuts down gracefully."""

    async def watch(_: web.Application) -> None:
        asyncio.get_running_loop().add_reader(STDIN_FD, _on_stdin)

    async def unwatch(_: web.Application) -> None:
        asyncio.get_running_loop().remove_reader(STDIN_FD)

    app.on_startup.append(watch)
    app.on_cleanup.append(unwatch)


def _on_stdin() -> None:
    if not os.read(STDIN_FD, 4096):  # b"": the front's end of the pipe is closed
        asyncio.get_running_loop().remove_reader(STDIN_FD)
        # The grace the front would give before SIGKILL: SIGALRM's default action ends the process.
        signal.alarm(int(STOP_GRACE_S))
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    index, config, socket_path, level = pickle.load(sys.stdin.buffer)
    assert isinstance(config, ServeConfig)
    logging.basicConfig(level=level, format=f"%(asctime)s worker-{index} %(name)s %(levelname)s %(message)s")
    quiet_ice_logs(verbose=level <= logging.DEBUG)
    limit_arenas()  # a worker is a long-running server too (memory.py)
    with warnings_as_log_lines():  # as the CLI does, which a worker does not go through
        return _serve(index, config, socket_path)


def _serve(index: int, config: ServeConfig, socket_path: str) -> int:
    app = serving_app(config)
    _exit_with_front(app)
    try:
        web.run_app(app, path=socket_path, print=None, access_log=None, handle_signals=True)
    except LipstreamError as exc:  # e.g. --face has no usable face: one line, as the CLI says it
        print(f"lipstream serve: worker {index}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
