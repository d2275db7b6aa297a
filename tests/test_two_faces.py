"""A photo with two faces: the largest is used, and the user is told once, in one line."""

import logging
import re
import subprocess
import sys
import warnings
import wave
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from lipstream import Avatar, AvatarConfig
from lipstream.engine.constants import SAMPLE_RATE
from tests.test_workers import Served, free_port, health

SMALL_FACE_PX = 320  # the second face, shrunk: the astronaut at 512 px is the largest


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut, and beside her a smaller copy on grey."""
    astronaut = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    side = np.full((astronaut.shape[0], SMALL_FACE_PX, 3), 128, np.uint8)
    top = (astronaut.shape[0] - SMALL_FACE_PX) // 2
    side[top : top + SMALL_FACE_PX] = cv2.resize(astronaut, (SMALL_FACE_PX, SMALL_FACE_PX))
    path = tmp_path_factory.mktemp("faces") / "two.png"
    Image.fromarray(np.hstack([astronaut, side])).save(path)
    return path


def test_the_api_warns_once(two_faces: Path, caplog: pytest.LogCaptureFixture) -> None:
    """It warned and logged the same news: a program with logging set up (the CLI) printed it twice."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        Avatar.from_image(two_faces, AvatarConfig(size=128))
    told = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert told == ["2 faces found in two.png: using the largest"]
    assert caught[0].category is UserWarning


def test_the_cli_says_it_in_one_line(two_faces: Path, tmp_path: Path) -> None:
    audio = tmp_path / "silence.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes(np.zeros(SAMPLE_RATE // 5, np.int16).tobytes())
    result = subprocess.run([sys.executable, "-m", "lipstream", "render", "--no-progress", "--face",
                             str(two_faces), "--audio", str(audio), "--out", str(tmp_path / "out.mp4"),
                             "--size", "64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    told = [line for line in result.stderr.splitlines() if "faces found" in line or "warn" in line.lower()]
    assert len(told) == 1, told  # not Python's display too, with the source line that warned
    assert told[0].endswith(" WARNING 2 faces found in two.png: using the largest"), told[0]


async def test_a_serve_worker_says_it_in_one_line_too(two_faces: Path) -> None:
    """A worker of `serve --workers N` does not go through the CLI's main: it printed Python's
    two-line display, the file path of the code that warned and its source line."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lipstream", "serve", "--workers", "2",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await health(http, Served(process, f"http://127.0.0.1:{port}"))
            form = aiohttp.FormData()
            form.add_field("photo", two_faces.read_bytes(), filename="two.png", content_type="image/png")
            async with http.post(f"http://127.0.0.1:{port}/v1/avatars", data=form) as response:
                assert response.status == 201, await response.text()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    told = [line for line in stderr.decode().splitlines() if "faces found" in line or "warn" in line.lower()]
    assert told, stderr.decode()[-3000:]
    assert all(re.fullmatch(r".* worker-\d lipstream WARNING 2 faces found in the uploaded photo: "
                            r"using the largest", line) for line in told), told
