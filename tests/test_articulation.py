"""The shipped model moves the mouth as far as speech does: its calibration travels with the weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.controls import IDENTITY, LIP_ROUND, N_CONTROLS, Calibration
from lipstream.engine.motion import load_motion_model, shipped_model_path
from lipstream.engine.runners import METADATA_KEY, OnnxMotionModel, calibration_of
from lipstream.errors import ModelError

onnx = pytest.importorskip("onnx", reason="rewriting model metadata needs the 'train' extra (onnx)")

# Displayed/true standard deviation of jaw_open and lip_spread (the calibrated controls that shape
# the opening), averaged. The uncalibrated network (regression to the mean) reaches ~0.84 on these
# utterances (the weights of commit 4e36aa4 fail here at 0.838); calibrated ~1.0.
MIN_MEAN_STD_RATIO = 0.92
SHAPE_CONTROLS = ("jaw_open", "lip_spread")
TEST_SEED = 2  # neither the fit's seed (1) nor the benchmark's (0)


@pytest.fixture(scope="module")
def shipped() -> OnnxMotionModel:
    model = load_motion_model(None)
    assert isinstance(model, OnnxMotionModel), "no motion.onnx: run 'lipstream train --install'"
    return model


def test_shipped_model_articulates_like_the_truth_on_fresh_speech(shipped: OnnxMotionModel) -> None:
    from lipstream.training.calibrate import articulation, pooled_tracks
    from lipstream.training.lipsync_set import heldout_set

    figures = articulation(pooled_tracks(shipped, heldout_set(4, TEST_SEED)))
    ratios = [figures["std_ratio"][name] for name in SHAPE_CONTROLS]
    assert np.mean(ratios) >= MIN_MEAN_STD_RATIO, f"the mouth mumbles: shown/true std {figures['std_ratio']}"
    assert figures["motion_ratio"] >= 0.9, figures


def test_calibration_maps_each_control_and_stays_in_range() -> None:
    calibration = Calibration(gain=(2.0,) * N_CONTROLS, offset=(-0.2,) * N_CONTROLS)
    out = calibration.apply(np.array([0.0, 0.05, 0.3, 0.6, 1.0], np.float32))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.4, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32
    assert calibration_of({}, "m.onnx") is IDENTITY


def test_shipped_model_applies_its_calibration_to_its_controls(shipped: OnnxMotionModel) -> None:
    rng = np.random.default_rng(0)
    frames = shipped.context_frames + shipped.lookahead_frames
    window = (rng.standard_normal((frames, 80)) - 4).astype(np.float32)
    raw = shipped.runner.run(window[None]).controls[0]
    assert shipped.calibration != IDENTITY
    np.testing.assert_allclose(shipped.predict(window).controls, shipped.calibration.apply(raw), atol=1e-6)


@pytest.mark.parametrize("calibration", [
    {"gain": [1.0] * 4, "offset": [0.0] * 5},
    {"gain": [1.0, 1.0, 0.0, 1.0, 1.0], "offset": [0.0] * 5},
    {"gain": [1.0] * 5, "offset": [0.0, 0.0, "x", 0.0, 0.0]},
    {"gain": [1.0] * 5},
    "gain 2",
])
def test_a_malformed_calibration_is_refused_at_load(shipped: OnnxMotionModel, tmp_path: Path,
                                                    calibration: object) -> None:
    proto = onnx.load(str(shipped_model_path()))
    meta = json.loads(proto.metadata_props[0].value)
    proto.metadata_props[0].value = json.dumps({**meta, "calibration": calibration})
    assert proto.metadata_props[0].key == METADATA_KEY
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelError, match="calibration"):
        OnnxMotionModel(tmp_path / "bad.onnx")


def test_fit_never_amplifies_what_noise_makes_the_model_say() -> None:
    from lipstream.training.calibrate import Tracks, refit

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (400, N_CONTROLS))
    raw = 0.2 + 0.5 * (truth - 0.5)  # half the truth's spread, pulled to the middle
    floor = np.full(N_CONTROLS, 0.1)
    floor[LIP_ROUND] = 0.3
    calibration = refit(Tracks(raw, raw, truth), IDENTITY, floor, tuple(range(N_CONTROLS)))
    np.testing.assert_allclose(calibration.gain, 2.0, atol=0.01)
    assert calibration.apply(floor.astype(np.float32))[LIP_ROUND] <= 0.3 + 1e-3
    assert (calibration.apply(floor.astype(np.float32)) <= floor + 1e-3).all()


def test_benchmark_figures_see_a_mumbling_mouth() -> None:
    """motion and std_ratio (benchmarks/lipsync.py) fall in proportion when the mouth moves less."""
    from lipstream.training.lipsync_metrics import Measured, Truth, motion_spread, score

    rng = np.random.default_rng(1)
    truth_controls = rng.uniform(0, 1, (200, N_CONTROLS))
    aperture = truth_controls[:, 0].copy()
    truth = Truth(aperture, np.zeros(200, np.int64), (), None, truth_controls)
    mumbled = Measured(0.8 * aperture, None, None, 0.8 * truth_controls)
    figures = score([(mumbled, truth)])
    assert figures.motion == pytest.approx(0.8 * motion_spread(aperture))
    assert figures.std_ratio is not None
    assert all(r == pytest.approx(0.8) for r in figures.std_ratio.values())
    assert score([(Measured(aperture), truth)]).std_ratio is None  # the oracle renders no controls


def test_given_gains_fit_only_the_offsets_as_refit_would() -> None:
    """--gains: a model trained on the prompts keeps the gains measured where the voice was unheard."""
    from lipstream.training.calibrate import Tracks, offsets_for, refit

    rng = np.random.default_rng(3)
    truth = rng.uniform(0, 1, (400, N_CONTROLS))
    raw = 0.2 + 0.5 * (truth - 0.5)
    floor = np.full(N_CONTROLS, 0.05)
    fitted = refit(Tracks(raw, raw, truth), IDENTITY, floor)
    given = offsets_for(Tracks(raw, raw, truth), np.asarray(fitted.gain), floor)
    assert given == fitted  # the same offsets for the same gains
    other = offsets_for(Tracks(raw, raw, truth), np.array([1.5, 1.2, 1.0, 1.0, 1.0]), floor)
    assert other.gain == (1.5, 1.2, 1.0, 1.0, 1.0)
    assert other.offset != fitted.offset and other.offset[LIP_ROUND] == 0.0


@pytest.mark.parametrize("gains, says", [
    (["0.5", "1", "1", "1", "1"], "each gain from 1"),
    (["1.3", "1.5", "2", "1", "1"], "lip_round keep gain 1"),
])
def test_calibrate_refuses_gains_it_cannot_use(gains: list[str], says: str) -> None:
    from lipstream.training import calibrate

    with pytest.raises(SystemExit, match=says):
        calibrate.main(["--gains", *gains])
