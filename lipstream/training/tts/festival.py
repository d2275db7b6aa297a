"""Festival, run as a subprocess; its Scheme script prints each phone's end time.

Festival runs a Scheme script per batch of utterances (`synthesize_many`) because starting the
interpreter costs more than synthesising a sentence with a diphone voice.
"""

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.speech import ARPABET, NEUTRAL, Prosody, Speech, phones_from_ends, to_16k
from lipstream.training.tts.subprocess_io import TIMEOUT_S, ascii_text, read_wav, require

FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")  # Debian's festvox-* packages install here


class Festival:
    name = "festival"
    phoneset = ARPABET

    def __init__(self) -> None:
        require("festival")

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
            f'(set! u (Utterance Text "{ascii_text(text)}"))',
            "(utt.synth u)",
            f'(utt.save.wave u "{out_dir / f"{i}.wav"}" \'riff)',
            '(mapcar (lambda (s) (format t "@@ %s %f\\n" (item.name s) (item.feat s "end")))'
            " (utt.relation.items u 'Segment))",
            '(format t "@@END\\n")',
        ]
    return "\n".join(lines) + "\n"
