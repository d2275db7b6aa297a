"""The README's Python examples run as written (with stand-ins for the caller's own TTS and sinks)."""

import re

import numpy as np
import pytest
from scipy.signal import resample_poly

from lipstream.engine.audio import load_audio
from tests.conftest import REPO, espeak_wav

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(section)


@pytest.fixture(scope="module")
def tts_chunks(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    speech = load_audio(espeak_wav(tmp_path_factory.mktemp("readme") / "hi.wav", "Hello, I am lipstream."))
    at_24k = (np.clip(resample_poly(speech, 3, 2), -1, 1) * 32767).astype(np.int16)
    return [at_24k[i : i + 480] for i in range(0, at_24k.size, 480)]  # 20 ms chunks


@pytest.mark.parametrize("index", range(3))
def test_python_examples_run(index: int, tts_chunks: list[np.ndarray]) -> None:
    blocks = _blocks("Use it from Python")
    assert len(blocks) == 3
    shown: list[np.ndarray] = []
    played: list[tuple[np.ndarray, int]] = []
    namespace = {"tts_chunks": tts_chunks, "show": shown.append,
                 "play": lambda pcm, rate: played.append((pcm, rate))}
    exec(compile(blocks[index], f"README block {index}", "exec"), namespace)
    if index < 2:
        assert shown and all(image.shape[2] == 3 for image in shown)
    if index == 0:  # the audio played back is what the TTS gave, at its rate
        pushed = np.concatenate(tts_chunks)
        back = np.concatenate([pcm for pcm, _ in played])
        np.testing.assert_array_equal(back[: pushed.size], pushed)
        assert {rate for _, rate in played} == {24_000}
    if index == 2:
        assert set(namespace["blendshapes"]) >= {"jawOpen", "mouthPucker"}
        assert namespace["viseme"] in namespace["VISEMES"]
