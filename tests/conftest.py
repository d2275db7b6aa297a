"""Shared fixtures: the photos in ../shared/faces, and speech with known timings."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The project's test photos; a user's checkout does not have them, so tests skip."""
    folder = Path(os.environ.get("LIPSTREAM_FACES", REPO.parent / "shared" / "faces"))
    if not (folder / "portrait-obama.jpg").is_file():
        pytest.skip(f"test photos not found in {folder} (set LIPSTREAM_FACES to a folder holding them)")
    return folder
