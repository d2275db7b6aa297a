"""Python warnings as log lines, for every process lipstream runs: the CLI and the workers of
`serve --workers N`, which do not go through the CLI. Its own module, importing nothing of
lipstream's, so that both can use it without a cycle."""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def warnings_as_log_lines() -> Iterator[None]:
    """A warning for the user (two faces in the photo: the largest is used) as one log line, like
    the process's other news: Python's own display adds the file and source line that warned."""
    with warnings.catch_warnings():
        warnings.showwarning = _log_warning
        yield


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    log = logging.getLogger("lipstream")
    log.warning("%s", message)
    log.debug("(warned at %s:%d, %s)", filename, lineno, category.__name__)  # with --verbose
