"""The C library's own functions, where it has them (glibc on Linux): memory.py's allocator
settings and a worker's tie to its front (worker_main.py)."""

import ctypes
import ctypes.util
from collections.abc import Callable


def libc_function(name: str) -> Callable[..., int] | None:
    """The C library's function `name`, or None where the library or the function is missing."""
    found = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(found), name, None) if found else None
