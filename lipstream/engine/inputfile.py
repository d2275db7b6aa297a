"""The one check of an input file a user names (a photo, an audio file), for the API and every command.

A folder is said to be one: "not found" sent users looking for a typo in a path that was right.
"""

from pathlib import Path

from lipstream.errors import LipstreamError


def check_input_file(path: str | Path, what: str, error: type[LipstreamError]) -> None:
    """Raise `error` unless `path` is a file; `what` names it in the message ("photo", "audio file")."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a file: give the {what} itself")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
