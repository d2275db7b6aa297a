"""What the subprocess engines (Festival, flite) share: their WAV output, their text, their binary."""

import re
import shutil
import wave
from pathlib import Path

import numpy as np

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.install import INSTALL_HINT

TIMEOUT_S = 120


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM mono WAV -> (float32 samples in [-1, 1], rate)."""
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, wav.getframerate()


def ascii_text(text: str) -> str:
    # The English lexicons know ASCII only; quotes and backslashes would break the Scheme string.
    return re.sub(r"[^A-Za-z0-9 .,;:!?'-]+", " ", text).strip() or "silence"


def require(binary: str) -> None:
    if shutil.which(binary) is None:
        raise SpeechEngineError(f"{binary} not found: install {INSTALL_HINT[binary]}")
