"""Festival and flite, run as subprocesses; both print each phone's end time.

Festival runs a Scheme script per batch of utterances (`synthesize_many`) because starting the
interpreter costs more than synthesising a sentence with a diphone voice.
"""

import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lipstream.errors import SpeechEngineError
from lipstream.training.tts import ARPABET, INSTALL_HINT, NEUTRAL, Prosody, Speech, phones_from_ends, to_16k

FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")  # Debian's festvox-* packages install here
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
TIMEOUT_S = 120


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM mono WAV -> (float32 samples in [-1, 1], rate)."""
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, wav.getframerate()


def _ascii(text: str) -> str:
    # The English lexicons know ASCII only; quotes and backslashes would break the Scheme string.
    return re.sub(r"[^A-Za-z0-9 .,;:!?'-]+", " ", text).strip() or "silence"


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        raise SpeechEngineError(f"{binary} not found: install {INSTALL_HINT[binary]}")


class Flite:
    name = "flite"
    phoneset = ARPABET

    def __init__(self) -> None:
        _require("flite")

    def voices(self) -> tuple[str, ...]:
        return FLITE_VOICES

    def synthesize(self, voice: str, text: str, language: str = "en", prosody: Prosody = NEUTRAL) -> Speech:
        stretch = f"duration_stretch={1 / prosody.tempo:.3f}"
        with tempfile.TemporaryDirectory(prefix="lipstream-flite-") as tmp:
            out = Path(tmp) / "speech.wav"
            result = subprocess.run(
                ["flite", "-voice", voice, "--setf", stretch, "-t", _ascii(text), "-o", str(out), "-psdur"],
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


class Festival:
    name = "festival"
    phoneset = ARPABET

    def __init__(self) -> None:
        _require("festival")

    def voices(self) -> tuple[str, ...]:
        return festival_voices()

    def synthesize(self, voice: str, text: str, language: str = "en", prosody: Prosody = NEUTRAL) -> Speech:
        return self.synthesize_many(voice, [text], prosody)[0]

    def synthesize_many(self, voice: str, texts: Sequence[str], prosody: Prosody = NEUTRAL) -> list[Speech]:
        """Synthesise several texts with one Festival process (start-up dominates a single sentence)."""
        with tempfile.TemporaryDirectory(prefix="lipstream-festival-") as tmp:
            script = Path(tmp) / "batch.scm"
            script.write_text(_festival_script(voice, texts, Path(tmp), prosody))
            result = subprocess.run(
                ["festival", "-b", str(script)],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
            blocks = result.stdout.split("@@END\n")[: len(texts)]
            if len(blocks) < len(texts):
                raise SpeechEngineError(f"festival failed for voice {voice}: {result.stderr.strip()[:200]}")
            return [self._speech(Path(tmp) / f"{i}.wav", block) for i, block in enumerate(blocks)]

    @staticmethod
    def _speech(wav_path: Path, block: str) -> Speech:
        audio, rate = read_wav(wav_path)
        audio = to_16k(audio, rate)
        pairs = [line.split() for line in block.splitlines() if line.startswith("@@ ")]
        labels = [p[1] for p in pairs]
        ends = [float(p[2]) for p in pairs]
        return Speech(audio, phones_from_ends(labels, ends, audio.size / 16000, ARPABET), ARPABET)


def festival_voices() -> tuple[str, ...]:
    """Installed Festival voices (their folders, as `voice_NAME` expects)."""
    if not FESTIVAL_VOICE_DIR.is_dir():
        return ()
    return tuple(sorted(p.name for p in FESTIVAL_VOICE_DIR.glob("*/*") if p.is_dir()))


def _festival_script(voice: str, texts: Sequence[str], out_dir: Path, prosody: Prosody) -> str:
    lines = [f"(voice_{voice})", f"(Parameter.set 'Duration_Stretch {1 / prosody.tempo:.3f})"]
    for i, text in enumerate(texts):
        lines += [
            f'(set! u (Utterance Text "{_ascii(text)}"))',
            "(utt.synth u)",
            f'(utt.save.wave u "{out_dir / f"{i}.wav"}" \'riff)',
            '(mapcar (lambda (s) (format t "@@ %s %f\\n" (item.name s) (item.feat s "end")))'
            " (utt.relation.items u 'Segment))",
            '(format t "@@END\\n")',
        ]
    return "\n".join(lines) + "\n"
