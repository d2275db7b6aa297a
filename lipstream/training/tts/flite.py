"""flite, run as a subprocess; `-psdur` prints each phone's end time."""

import subprocess
import tempfile
from pathlib import Path

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.speech import ARPABET, NEUTRAL, Prosody, Speech, phones_from_ends, to_16k
from lipstream.training.tts.subprocess_io import TIMEOUT_S, ascii_text, read_wav, require

FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")


class Flite:
    name = "flite"
    phoneset = ARPABET

    def __init__(self) -> None:
        require("flite")

    def voices(self) -> tuple[str, ...]:
        return FLITE_VOICES

    def synthesize(self, voice: str, text: str, language: str = "en", prosody: Prosody = NEUTRAL) -> Speech:
        stretch = f"duration_stretch={1 / prosody.tempo:.3f}"
        with tempfile.TemporaryDirectory(prefix="lipstream-flite-") as tmp:
            out = Path(tmp) / "speech.wav"
            result = subprocess.run(
                ["flite", "-voice", voice, "--setf", stretch, "-t", ascii_text(text), "-o", str(out),
                 "-psdur"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0 or not out.exists():
                raise SpeechEngineError(f"flite failed for voice {voice}: {result.stderr.strip()[:200]}")
            audio, rate = read_wav(out)
        pairs = [item.rsplit(":", 1) for item in result.stdout.split()]
        audio = to_16k(audio, rate)
        phones = phones_from_ends(
            [label for label, _ in pairs], [float(end) for _, end in pairs], audio.size / 16000, ARPABET
        )
        return Speech(audio, phones, ARPABET)
