"""The lip-sync figures of benchmarks/lipsync.py on signals whose answer is known."""

import numpy as np
import pytest

from lipstream.engine.constants import MEL_FRAMES_PER_VIDEO_FRAME
from lipstream.engine.controls import JAW_OPEN, LIP_PRESS, LIP_SPREAD, N_CONTROLS, VISEMES
from lipstream.training.lipsync_metrics import (
    FRAME_MS,
    Measured,
    Truth,
    best_lag,
    bilabial_centres_s,
    closure_hits,
    frame_centre_visemes,
    make_truth,
    pearson,
    score,
    truth_aperture,
)
from lipstream.training.tts import ARPABET, Phone


def speechlike(t_s: np.ndarray) -> np.ndarray:
    """A mouth-opening-like signal: syllables at 3-6 Hz under a slow phrase envelope, >= 0."""
    syllables = np.sin(2 * np.pi * 4.1 * t_s) + 0.6 * np.sin(2 * np.pi * 6.3 * t_s + 1.0)
    return np.clip(syllables, 0, None) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.37 * t_s))


def frame_centres_s(n: int, shift_ms: float = 0.0) -> np.ndarray:
    return ((np.arange(n) + 0.5) * FRAME_MS - shift_ms) / 1000


def test_truth_aperture_averages_each_frames_mel_frames_and_closes_on_press() -> None:
    controls = np.zeros((2 * MEL_FRAMES_PER_VIDEO_FRAME + 3, N_CONTROLS), np.float32)  # + a partial frame
    controls[:4, JAW_OPEN] = [1.0, 1.0, 0.5, 0.5]
    controls[4:8, JAW_OPEN] = 0.8
    controls[4:8, LIP_PRESS] = [1.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(truth_aperture(controls), [0.75, 0.4])


@pytest.mark.parametrize("video_late_ms", [0.0, 20.0, -40.0, 120.0])
def test_best_lag_finds_a_known_delay_to_within_5_ms(video_late_ms: float) -> None:
    pairs = []
    for start_s in (0.0, 7.3, 13.9):  # three utterances, pooled
        truth = speechlike(frame_centres_s(90) + start_s)
        measured = 0.07 * speechlike(frame_centres_s(90, video_late_ms) + start_s) + 0.001
        pairs.append((measured, truth))
    lag_ms, corr = best_lag(pairs)
    assert abs(lag_ms - video_late_ms) <= 5.0, lag_ms
    assert corr > 0.95


def test_correlation_ignores_frames_where_the_face_was_lost() -> None:
    truth = speechlike(frame_centres_s(100))
    measured = 0.05 * truth
    measured[[3, 40, 41, 77]] = np.nan
    assert pearson(measured, truth) == pytest.approx(1.0)
    s = score([(Measured(measured), make_truth_from(truth))])
    assert s.correlation == pytest.approx(1.0) and s.face_found == pytest.approx(0.96)


def make_truth_from(aperture: np.ndarray) -> Truth:
    return Truth(aperture, np.zeros(aperture.size, np.int64), ())


def _open_mouth_with_closures(n: int, closed_frames: list[int]) -> np.ndarray:
    measured = np.full(n, 0.06)
    measured[:5] = measured[-5:] = 0.001  # rest before and after the speech
    measured[closed_frames] = 0.002
    return measured


def test_closures_reached_at_the_phone_centres_all_hit() -> None:
    centres = [0.42, 1.03, 1.61]  # frames 10, 25, 40
    measured = _open_mouth_with_closures(60, [10, 25, 40])
    assert closure_hits(measured, centres).all()


def test_a_closure_one_frame_off_still_hits_two_frames_off_misses() -> None:
    assert closure_hits(_open_mouth_with_closures(60, [26]), [1.03]).all()
    assert not closure_hits(_open_mouth_with_closures(60, [27]), [1.03]).any()


def test_a_mouth_that_never_closes_in_speech_misses_every_closure() -> None:
    measured = _open_mouth_with_closures(60, [])
    measured[8:50] = 0.03 + 0.03 * speechlike(frame_centres_s(42))  # at least half open
    assert not closure_hits(measured, [0.42, 1.03, 1.61]).any()


def test_truth_from_phones_bilabial_centres_and_frame_visemes() -> None:
    phones = (Phone("pau", 0.0, 0.1), Phone("m", 0.1, 0.2), Phone("aa", 0.2, 0.4), Phone("p", 0.4, 0.44),
              Phone("pau", 0.44, 0.6))
    assert bilabial_centres_s(phones, ARPABET) == pytest.approx((0.15, 0.42))
    visemes = [VISEMES[v] for v in frame_centre_visemes(phones, ARPABET, 15)]
    assert visemes[0] == "sil" and visemes[3] == "PP" and visemes[5] == "aa" and visemes[10] == "PP"
    assert visemes[14] == "sil"


def test_a_perfect_measurement_scores_perfectly() -> None:
    phones = (Phone("pau", 0.0, 0.3), Phone("aa", 0.3, 0.6), Phone("m", 0.6, 0.7), Phone("aa", 0.7, 1.0),
              Phone("pau", 1.0, 1.4))
    t = np.arange(140) * 0.01 + 0.005  # mel hop centres
    controls = np.zeros((140, N_CONTROLS), np.float32)
    controls[:, JAW_OPEN] = ((t > 0.3) & (t < 0.6)) | ((t > 0.7) & (t < 1.0))
    controls[:, LIP_SPREAD] = (t > 0.7) & (t < 1.0)
    truth = make_truth(controls, phones, ARPABET)
    measured = Measured(0.001 + 0.08 * truth.aperture, visemes=truth.visemes, width=0.4 + 0.05 * truth.width)
    s = score([(measured, truth)])
    assert s.correlation == pytest.approx(1.0) and s.width_correlation == pytest.approx(1.0)
    assert abs(s.best_lag_ms) < 1.0
    assert s.closure_hit_rate == 1.0 and s.closures == 1
    assert s.viseme_accuracy == 1.0 and s.frames == 35
    assert score([(Measured(measured.aperture), truth)]).viseme_accuracy is None  # baseline: no head
    assert np.isnan(score([(Measured(measured.aperture), truth)]).width_correlation)  # not measured


def test_truth_controls_rendered_and_remeasured_follow_the_truth() -> None:
    """The benchmark's oracle row in small: the renderer and FaceMesh can show what the phones say."""
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.render import Renderer
    from lipstream.training.corpus import PHONESET
    from lipstream.training.evaluate import MouthMeter
    from lipstream.training.lipsync_set import framed
    from lipstream.training.tts import available

    if not available("espeak"):
        pytest.skip("espeak-ng library not installed (pip install espeakng-loader)")
    from lipstream.training.corpus import synthesize

    utt = framed(synthesize("espeak", "+m3", "Bob bought a map, and papa made a mop. We see two blue moons.",
                            "en-us"))
    truth = make_truth(utt.controls, utt.phones, PHONESET[utt.engine])
    renderer = Renderer(Avatar.default(AvatarConfig(size=256)), seed=0)
    mel = utt.controls[: truth.aperture.size * MEL_FRAMES_PER_VIDEO_FRAME]
    per_frame = mel.reshape(truth.aperture.size, MEL_FRAMES_PER_VIDEO_FRAME, N_CONTROLS).mean(axis=1)
    with MouthMeter() as meter:
        readings = [meter.read(renderer.render(c, n)) for n, c in enumerate(per_frame)]
    s = score([(Measured(np.array([r.aperture if r.found else np.nan for r in readings]),
                         width=np.array([r.width for r in readings])), truth)])
    assert s.face_found == 1.0
    assert s.width_correlation > 0.5, s  # "ee" wider, "oo" narrower, as the phones say
    assert s.correlation > 0.8, s
    assert abs(s.best_lag_ms) <= 20, s
    assert s.closures >= 6 and s.closure_hit_rate >= 0.8, s
