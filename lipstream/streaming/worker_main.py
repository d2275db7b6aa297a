"""The entry point of one worker process of `lipstream serve --workers N` (see workers.py).

The front starts it with its own pid as the one argument, writes `(index, ServeConfig, socket
path, log level)` pickled to the worker's stdin and keeps the pipe open. The worker serves the
whole API on that unix socket, and shuts down as on SIGTERM (closing its sessions) as soon as the
pipe reaches end of file: the front has gone. Like the front's own SIGTERM -> SIGKILL, that
shutdown gets STOP_GRACE_S before the process ends anyway. The pipe is watched once the server
runs; before that (the engine loading, several seconds, minutes on a starved machine) the kernel
sends the SIGTERM itself when the front ends (Linux), which until aiohttp takes SIGTERM over ends
the process at once.
"""

import asyncio
import os
import pickle
import signal
import sys
from typing import TYPE_CHECKING

# Only light imports here: the tie to the front is made before the engine's modules load (~1 s,
# far longer on a starved machine), so those are imported where they are used.
from lipstream.streaming.libc import libc_function

if TYPE_CHECKING:
    from aiohttp import web

    from lipstream.streaming.config import ServeConfig

STDIN_FD = 0
PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h: a signal for us when our parent ends


def _exit_with_front(app: "web.Application") -> None:
    """On EOF of stdin, signal ourselves as `kill` would: aiohttp then shuts down gracefully."""

    async def watch(_: "web.Application") -> None:
        asyncio.get_running_loop().add_reader(STDIN_FD, _on_stdin)

    async def unwatch(_: "web.Application") -> None:
        asyncio.get_running_loop().remove_reader(STDIN_FD)

    app.on_startup.append(watch)
    app.on_cleanup.append(unwatch)


def _on_stdin() -> None:
    from lipstream.streaming.workers import STOP_GRACE_S

    if not os.read(STDIN_FD, 4096):  # b"": the front's end of the pipe is closed
        asyncio.get_running_loop().remove_reader(STDIN_FD)
        # The grace the front would give before SIGKILL: SIGALRM's default action ends the process.
        signal.alarm(int(STOP_GRACE_S))
        os.kill(os.getpid(), signal.SIGTERM)


def _end_with_front(front_pid: int) -> bool:
    """SIGTERM from the kernel when the front ends, however it ends (SIGKILL, the OOM killer),
    from now on -> False if it already has (we were handed to another parent before asking).
    The front spawns workers from its main thread, whose end is the process's."""
    prctl = libc_function("prctl")
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == front_pid


def main() -> int:
    if not _end_with_front(int(sys.argv[1])):
        return 0
    index, config, socket_path, level = pickle.load(sys.stdin.buffer)  # imports ServeConfig's modules
    import logging

    from lipstream.logs import warnings_as_log_lines
    from lipstream.streaming.memory import limit_arenas
    from lipstream.streaming.server import quiet_ice_logs

    logging.basicConfig(level=level, format=f"%(asctime)s worker-{index} %(name)s %(levelname)s %(message)s")
    quiet_ice_logs(verbose=level <= logging.DEBUG)
    limit_arenas()  # a worker is a long-running server too (memory.py)
    with warnings_as_log_lines():  # as the CLI does, which a worker does not go through
        return _serve(index, config, socket_path)


def _serve(index: int, config: "ServeConfig", socket_path: str) -> int:
    from aiohttp import web

    from lipstream.errors import LipstreamError
    from lipstream.streaming.eventloop import use_fast_event_loop
    from lipstream.streaming.server import serving_app

    use_fast_event_loop()
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
