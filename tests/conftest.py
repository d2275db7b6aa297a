"""Shared fixtures: the photos in ../shared/faces, speech with known timings, the avatar servers
render, and ICE kept on loopback."""

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import numpy as np

    from lipstream.engine.avatar import Avatar

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The project's test photos; a user's checkout does not have them, so tests skip."""
    folder = Path(os.environ.get("LIPSTREAM_FACES", REPO.parent / "shared" / "faces"))
    if not (folder / "portrait-obama.jpg").is_file():
        pytest.skip(f"test photos not found in {folder} (set LIPSTREAM_FACES to a folder holding them)")
    return folder


def espeak_wav(path: Path, text: str, *args: str) -> Path:
    """Speak `text` with espeak-ng into a WAV (22.05 kHz mono int16)."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True)
    return path


def float_wav(path: Path, samples: "np.ndarray", rate: int = 16_000) -> Path:
    """A 32-bit float mono WAV, which can hold what int16 cannot: NaN, infinities, samples past 1."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="wav") as container:
        out = container.add_stream("pcm_f32le", rate=rate)
        out.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None], format="flt", layout="mono")
        frame.sample_rate = rate
        container.mux(out.encode(frame))
        container.mux(out.encode(None))
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short English sentence with plain lip movements (closures, open vowels)."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    return espeak_wav(path, "Papa bought a big map. Bob, look at the moon!")


@pytest.fixture(scope="module")
def avatar() -> "Avatar":
    """The default face at 256 px, the size FaceMesh reads in the tests; 512 costs 4x. A module
    that needs another size defines its own `avatar`."""
    from lipstream.engine.avatar import Avatar, AvatarConfig

    return Avatar.default(AvatarConfig(size=256))


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """ICE on 127.0.0.1 only (tests/serving.py): `pytestmark = pytest.mark.usefixtures("loopback")`
    in a module whose tests run servers and peers."""
    from tests.serving import loopback_only

    loopback_only(monkeypatch)


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech with silence around it: Chromium loops the file."""
    import numpy as np

    from lipstream.engine.audio import load_audio
    from lipstream.engine.constants import SAMPLE_RATE
    from tests.browser import write_fake_mic_wav

    folder = tmp_path_factory.mktemp("mic")
    speech = load_audio(espeak_wav(folder / "speech.wav", "Papa bought a big map. Mama, look at the moon!"))
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * 0.7
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    return write_fake_mic_wav(folder / "mic48k.wav", np.concatenate([pad, speech, pad]))


@pytest.fixture(params=[()], ids=["default-autoplay"])
async def browser(request: pytest.FixtureRequest, fake_mic: Path, tmp_path: Path) -> AsyncIterator[Any]:
    from tests.browser import chromium_executable, launch

    chromium_executable()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await launch(playwright, tmp_path / "profile", fake_mic, *request.param)
        try:
            yield context
        finally:
            await context.close()
