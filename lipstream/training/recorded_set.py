"""A recorded-speech development set: real human voices, phone-aligned automatically. Never trained on.

The recordings are those Debian's `codec2-examples` package installs (read English, several male
and female speakers, 8 kHz and 16 kHz), and the five sentences of an audiobook (LibriVox, Jane
Austen's "Sense and Sensibility", one reader with a low voice, 16 kHz, with their transcripts)
that Debian's `pocketsphinx-testdata` installs. Each is brought to 16 kHz, recognised with pocketsphinx's
bundled US-English model unless a transcript is written below, then force-aligned to the words at
the phone level (CMU ARPAbet, 10 ms frames). The alignment is automatic: see ALIGNMENT_NOTE.
Like `lipsync_set`, each utterance is levelled to -20 dBFS and framed by silence.

    python -m lipstream.training.recorded_set   # prints each utterance's words and phones
"""

import logging
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipstream.engine.audio import load_audio
from lipstream.engine.constants import HOP_MS, SAMPLE_RATE
from lipstream.errors import SpeechEngineError
from lipstream.training.corpus import RECORDED, Utterance, label
from lipstream.training.lipsync_set import framed
from lipstream.training.tts import Phone, to_16k

log = logging.getLogger(__name__)

CODEC2_DIR = Path("/usr/share/codec2")  # where Debian's codec2-examples puts its recordings
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")  # Debian's pocketsphinx-testdata
PACKAGES = "codec2-examples pocketsphinx-testdata"  # the Debian packages holding the recordings
RAW_RATE_HZ = 8000  # codec2's .raw files: headerless s16 mono
SILENCE = "sil"
NOISE_PREFIX = "+"  # pocketsphinx's filler phones (+NSN+, +SPN+ ...): no mouth shape
ALIGNMENT_NOTE = ("phones by pocketsphinx forced alignment (10 ms frames); words from its recogniser "
                  "unless a transcript is given, so some words are wrong (see the module's README note)")


@dataclass(frozen=True)
class Recording:
    path: str  # under folder
    transcript: str | None = None  # None: use what the recogniser hears
    folder: Path = CODEC2_DIR
    name: str | None = None  # the utterance's voice in reports; None: the file's stem

    @property
    def file(self) -> Path:
        return self.folder / self.path

    @property
    def voice(self) -> str:
        return self.name or self.file.stem


def _audiobook(number: str, transcript: str) -> Recording:
    """One sentence of the LibriVox reading; transcript as the package's librivox/transcription."""
    return Recording(f"librivox/sense_and_sensibility_01_austen_64kb-{number}.wav", transcript,
                     POCKETSPHINX_DIR, f"austen-{number}")


# Clean read speech only: the HF-radio recordings in the package (vk5qi, ve9qrp, ...) are noisy
# and clipped, david4 / vk2tpm_004 are 30 s monologues the recogniser cannot follow, and mmt1 does
# not align to what the recogniser hears in it. Of pocketsphinx-testdata, only the audiobook: its
# other recordings are short commands and digit strings (cards, goforward, numbers), not reading.
RECORDINGS = (
    # recognised as "... the big top schools"; the spectrogram shows "task force" (no /p/ closure,
    # an /f/ and an /r/-coloured vowel where the recogniser put "schools")
    Recording("raw/hts1a.raw", "the navy attacked the big task force"),
    Recording("raw/hts2a.raw"),
    Recording("raw/forig.raw"),
    Recording("raw/morig.raw"),
    Recording("raw/cross.raw"),
    Recording("raw/big_dog.raw"),
    Recording("raw/kristoff.raw"),
    # Harvard sentences list 1, nos. 1, 2, 3 and 10 (recognised as "the bitch kinnear slipped ...")
    Recording("raw/speech_orig_16k.wav", "the birch canoe slid on the smooth planks glue the sheet to "
              "the dark blue background it's easy to tell the depth of a well "
              "four hours of steady work faced us"),
    _audiobook("0870", "and mister john dashwood had then leisure to consider how much there might be "
               "prudently in his power to do for them"),
    _audiobook("0880", "he was not an ill disposed young man"),
    _audiobook("0890", "unless to be rather cold hearted and rather selfish is to be ill disposed"),
    _audiobook("0920", "had he married a more a amiable woman he might have been made still more "
               "respectable than he was"),
    _audiobook("0930", "he might even have been made amiable himself"),
)


def read_recording(path: Path) -> np.ndarray:
    """16 kHz float32 mono from a codec2 .raw (8 kHz s16), a WAV (s16, first channel) or raw G.722."""
    if path.suffix == ".g722":  # FFmpeg knows the raw G.722 stream by its extension
        return load_audio(path)
    if path.suffix == ".wav":
        with wave.open(str(path)) as w:
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, channels)[:, 0]
    else:
        rate, pcm = RAW_RATE_HZ, np.fromfile(path, np.int16)
    return to_16k(pcm.astype(np.float32) / 32768.0, rate)


def _decode(decoder: object, pcm: bytes) -> None:
    decoder.start_utt()  # type: ignore[attr-defined]
    decoder.process_raw(pcm, full_utt=True)  # type: ignore[attr-defined]
    decoder.end_utt()  # type: ignore[attr-defined]


def align(audio: np.ndarray, transcript: str | None) -> tuple[str, tuple[Phone, ...]]:
    """(words, phones with times in s) for 16 kHz audio; recognised first if no transcript is given."""
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise SpeechEngineError("aligning recorded speech needs pocketsphinx: "
                                "pip install 'lipstream[train]'") from exc
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    if transcript is None:
        _decode(decoder, pcm)
        transcript = decoder.hyp().hypstr if decoder.hyp() is not None else ""
    decoder.set_align_text(transcript)
    _decode(decoder, pcm)
    decoder.set_alignment()
    _decode(decoder, pcm)
    phones = tuple(_phone(p.name, p.start, p.duration) for word in decoder.get_alignment() for p in word)
    return transcript, phones


def _phone(name: str, start_frames: int, duration_frames: int) -> Phone:
    labelled = SILENCE if name.startswith(NOISE_PREFIX) else name.lower()
    return Phone(labelled, start_frames * HOP_MS / 1000, (start_frames + duration_frames) * HOP_MS / 1000)


def recorded_set() -> list[Utterance]:
    """Every recording that is installed, aligned and framed; an error says what to install if none is."""
    out = []
    for recording in RECORDINGS:
        if not recording.file.is_file():
            continue
        audio = read_recording(recording.file)
        try:
            words, phones = align(audio, recording.transcript)
        except RuntimeError as exc:  # pocketsphinx found no path through the words
            log.warning("recording %s skipped: it does not align (%s)", recording.path, exc)
            continue
        end = int(round(phones[-1].end_s * SAMPLE_RATE)) if phones else 0
        if end:
            out.append(framed(label(audio[:end], phones, RECORDED, recording.voice, "en", words)))
    if not out:
        raise SpeechEngineError(f"no recordings in {CODEC2_DIR} or {POCKETSPHINX_DIR}: "
                                f"apt-get install {PACKAGES}")
    return out


def main() -> None:
    for utt in recorded_set():
        print(f"{utt.voice}: {utt.audio.size / SAMPLE_RATE:.1f} s: {utt.text}")
        print("   " + " ".join(f"{p.label}@{p.start_s:.2f}" for p in utt.phones))


if __name__ == "__main__":
    main()
