"""Keep native libraries' log lines off the user's terminal.

mediapipe's C++ core writes INFO/WARNING lines straight to file descriptor 2 when a graph
starts ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires..."), and no
environment variable of this release turns them off. A CLI whose errors must be one line cannot
let them through, so FaceMesh set-up and first use run with fd 2 pointed at /dev/null.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence fd 2 for the block (Python's own sys.stderr is flushed first and keeps working
    for lines written after it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
