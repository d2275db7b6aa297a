"""Input files named on the command line: a folder is called a folder, a missing file missing, each in
one line with exit code 2, by every command that takes the file (and by the Python API under them)."""

import wave
from pathlib import Path

import numpy as np
import pytest

from lipstream import Avatar
from lipstream.cli import main
from lipstream.engine.audio import AudioFile
from lipstream.engine.constants import SAMPLE_RATE
from lipstream.errors import AudioError, PhotoError


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    """A second of a quiet tone: audio any command can read."""
    path = tmp_path / "tone.wav"
    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes((tone * 32767).astype(np.int16).tobytes())
    return path


def _commands(folder: Path, speech: Path, out: Path) -> dict[str, list[str]]:
    """Each command and option that takes an input file, given `folder` instead."""
    return {
        "render --face": ["render", "--no-progress", "--audio", str(speech), "--face", str(folder),
                          "--out", str(out)],
        "render --audio": ["render", "--no-progress", "--audio", str(folder), "--out", str(out)],
        "live --face": ["live", "--face", str(folder), "--out", str(out)],
        "serve --face": ["serve", "--face", str(folder), "--port", "0"],
    }


@pytest.mark.parametrize("given", ["render --face", "render --audio", "live --face", "serve --face"])
def test_a_folder_given_as_an_input_file_is_called_a_folder(
        given: str, tmp_path: Path, speech: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was reported as "photo not found" / "audio file not found": a user looked for a typo in a
    path that was right, and pointed at a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    code = main(_commands(folder, speech, tmp_path / "out.mp4")[given])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    what = "audio file" if given.endswith("--audio") else "photo"
    assert lines[0].endswith(f"{folder} is a folder, not a file: give the {what} itself"), lines[0]
    assert not (tmp_path / "out.mp4").exists()


def test_the_api_says_folder_too(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match=r"is a folder, not a file: give the photo itself$"):
        Avatar.from_image(tmp_path)
    with pytest.raises(AudioError, match=r"is a folder, not a file: give the audio file itself$"):
        AudioFile(tmp_path)


def test_a_missing_file_is_still_not_found(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match=r"^photo not found: .*nowhere\.jpg$"):
        Avatar.from_image(tmp_path / "nowhere.jpg")
    with pytest.raises(AudioError, match=r"^audio file not found: .*nowhere\.wav$"):
        AudioFile(tmp_path / "nowhere.wav")
