"""The Engine: frames paired with their audio, fixed latency, chunking does not matter."""

from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.audio import load_audio
from lipstream.engine.avatar import Avatar
from lipstream.engine.constants import SAMPLE_RATE, SAMPLES_PER_VIDEO_FRAME
from lipstream.engine.controls import JAW_OPEN
from lipstream.engine.engine import Engine, EngineConfig


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> np.ndarray:
    return load_audio(speech_wav)[: int(1.2 * SAMPLE_RATE)]


def _run(avatar: Avatar, audio: np.ndarray, chunk: int) -> list:
    engine = Engine(avatar, EngineConfig(seed=3))
    frames = []
    for i in range(0, audio.size, chunk):
        engine.push_audio(audio[i : i + chunk], SAMPLE_RATE)
        frames += engine.frames()
    engine.finish()
    return frames + engine.frames()


def test_chunk_size_does_not_change_frames(avatar: Avatar, speech: np.ndarray) -> None:
    reference = _run(avatar, speech, 16_000)
    assert len(reference) == -(-speech.size // SAMPLES_PER_VIDEO_FRAME)
    for chunk in (1, 7, 320):
        frames = _run(avatar, speech, chunk)
        assert len(frames) == len(reference)
        for a, b in zip(frames, reference, strict=True):
            assert a.index == b.index
            np.testing.assert_array_equal(a.controls, b.controls)
            np.testing.assert_array_equal(a.image, b.image)


def test_each_frame_carries_the_audio_it_was_made_from(avatar: Avatar, speech: np.ndarray) -> None:
    frames = _run(avatar, speech, 320)
    audio = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(audio[: speech.size], speech)
    assert np.all(audio[speech.size :] == 0)  # the last frame is padded with silence
    assert [f.pts for f in frames[:3]] == [0, 3600, 7200]
    assert [f.audio_pts for f in frames[:3]] == [0, 640, 1280]


def test_frame_leaves_after_its_audio_and_the_lookahead(avatar: Avatar) -> None:
    engine = Engine(avatar)
    needed = SAMPLES_PER_VIDEO_FRAME + engine.lookahead_samples
    assert engine.latency_samples == needed
    engine.push_audio(np.zeros(needed - 1, np.float32), SAMPLE_RATE)
    assert engine.ready() == 0 and engine.pop_frame() is None
    engine.push_audio(np.zeros(1, np.float32), SAMPLE_RATE)
    assert engine.ready() == 1


def test_silence_rests_and_skipped_frames_stay_in_step(avatar: Avatar, speech: np.ndarray) -> None:
    engine = Engine(avatar)
    engine.push_audio(speech, SAMPLE_RATE)
    engine.push_audio(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)  # one second of silence
    frames = [engine.pop_frame(render=i % 2 == 0) for i in range(engine.ready())]
    assert all(f is not None for f in frames)
    assert max(f.controls[JAW_OPEN] for f in frames if f) > 0.3  # the speech opened the mouth
    assert frames[-1] is not None and frames[-1].controls.max() < 0.05  # and silence closed it
    skipped = [f for f in frames if f and not f.rendered]
    assert skipped and all(f.image is not None for f in skipped)
    assert [f.index for f in frames if f] == list(range(len(frames)))


def test_clear_drops_pending_input_and_keeps_counting(avatar: Avatar, speech: np.ndarray) -> None:
    engine = Engine(avatar)
    engine.push_audio(speech[:SAMPLE_RATE // 2], SAMPLE_RATE)
    before = engine.frames()
    engine.push_audio(speech[SAMPLE_RATE // 2 :], SAMPLE_RATE)
    engine.clear()
    assert engine.ready() == 0
    engine.push_audio(np.zeros(SAMPLES_PER_VIDEO_FRAME + engine.lookahead_samples, np.float32),
                      SAMPLE_RATE)
    after = engine.frames()
    assert after and after[0].index == before[-1].index + 1
    assert not np.any(after[0].audio)


def test_the_viseme_heads_bilabial_belief_closes_the_lips() -> None:
    from lipstream.engine.controls import (
        LIP_PRESS,
        LIP_SPREAD,
        N_VISEMES,
        VISEMES,
        MotionOutput,
        close_for_bilabials,
    )

    controls = np.array([0.6, 0.3, 0.0, 0.1, 0.0], np.float32)
    visemes = np.full(N_VISEMES, 0.5 / (N_VISEMES - 1), np.float32)
    visemes[VISEMES.index("PP")] = 0.5
    half = close_for_bilabials(MotionOutput(controls, visemes), gain=1.0)
    assert half[JAW_OPEN] == pytest.approx(0.3) and half[LIP_PRESS] == pytest.approx(0.5)
    assert half[LIP_SPREAD] == controls[LIP_SPREAD]
    full = close_for_bilabials(MotionOutput(controls, visemes), gain=2.0)
    assert full[JAW_OPEN] == 0.0 and full[LIP_PRESS] == 1.0
    for unchanged in (close_for_bilabials(MotionOutput(controls, visemes), gain=0.0),
                      close_for_bilabials(MotionOutput(controls, None), gain=2.0)):
        np.testing.assert_array_equal(unchanged, controls)
