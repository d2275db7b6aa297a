"""How a long-running server keeps its memory flat: glibc's allocator, told what we know.

glibc gives each thread that allocates under contention its own malloc arena (up to 8 per core) and
keeps what is freed in them for reuse. A server whose render threads, encoder threads and event
loop all allocate frame-sized buffers grows one arena after another, in steps, for an hour
(measured: +34 MB in 17 minutes of one session, in 64 MB-aligned arenas). Two arenas serve our
few threads, and trimming now and then hands freed pages back. Other C libraries: no-ops.
"""

import asyncio
import logging

from lipstream.streaming.libc import libc_function

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter number, from glibc's malloc.h
ARENAS = 2  # the event loop's and the render pool's allocations, mostly
TRIM_EVERY_S = 30.0


_MALLOPT = libc_function("mallopt")  # glibc only
_MALLOC_TRIM = libc_function("malloc_trim")


def limit_arenas(arenas: int = ARENAS) -> None:
    """Cap glibc's malloc arenas for the whole process (call before threads start allocating)."""
    if _MALLOPT is not None and not _MALLOPT(M_ARENA_MAX, arenas):
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)


def release_free_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it in its arenas otherwise)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


async def trim_periodically(every_s: float = TRIM_EVERY_S) -> None:
    """Release free memory every `every_s`, off the event loop (a trim walks the whole heap)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every_s)
        await loop.run_in_executor(None, release_free_memory)
