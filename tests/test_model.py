"""The trained audio-to-mouth model: training runs, exports faithfully, and the shipped file works."""

import json
from pathlib import Path

import numpy as np
import pytest

from lipstream.engine.controls import IDENTITY, JAW_OPEN, N_CONTROLS, N_VISEMES
from lipstream.engine.mel import SILENCE_LOG_MEL, log_mel
from lipstream.engine.motion import load_motion_model, shipped_model_path
from lipstream.engine.runners import METADATA_KEY, OnnxMotionModel, OnnxRunner, read_metadata
from lipstream.errors import ModelError

torch = pytest.importorskip("torch", reason="training needs the 'train' extra (torch)")
onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'train' extra (onnx)")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-second `lipstream train` on a small sample of the real corpus."""
    from lipstream.cli import main

    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--out", str(out), "--steps", "30", "--val-every", "10", "--batch-size", "8",
                 "--pool-utterances", "8", "--val-utterances", "2", "--threads", "1", "--seed", "3",
                 "--calibrate-utterances", "2", "--calibrate-prompts", "0"])
    assert code == 0
    return out


def test_short_training_run_decreases_the_loss(short_run: Path) -> None:
    rows = json.loads((short_run / "loss.json").read_text())
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"]
    assert (short_run / "checkpoint.pt").is_file() and (short_run / "loss.csv").is_file()


def test_torch_and_onnx_agree(short_run: Path) -> None:
    from lipstream.engine.runners import TorchRunner
    from lipstream.training.model import ModelConfig, MotionNet, WindowMotionNet

    checkpoint = torch.load(short_run / "checkpoint.pt", weights_only=True)
    net = MotionNet(ModelConfig.from_dict(checkpoint["model_config"]))
    net.load_state_dict(checkpoint["state_dict"])
    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((16, net.config.window_frames, 80)) - 5).astype(np.float32)
    ours = OnnxRunner(short_run / "motion.onnx").run(mel)
    theirs = TorchRunner(WindowMotionNet(net)).run(mel)
    assert ours.controls.shape == (16, N_CONTROLS) and ours.visemes.shape == (16, N_VISEMES)
    np.testing.assert_allclose(ours.controls, theirs.controls, atol=1e-4)
    np.testing.assert_allclose(ours.visemes, theirs.visemes, atol=1e-4)


def test_metadata_round_trips(short_run: Path) -> None:
    meta = read_metadata(short_run / "motion.onnx")
    assert meta == json.loads((short_run / "motion.json").read_text())
    assert (meta["context_frames"], meta["lookahead_frames"]) == (24, 4)
    assert meta["mel"]["n_mels"] == 80 and meta["mel"]["sample_rate"] == 16000
    assert meta["corpus"]["train"]["utterances"] == 8 and meta["command"].startswith("lipstream train")
    model = OnnxMotionModel(short_run / "motion.onnx")
    assert (model.context_frames, model.lookahead_frames) == (24, 4)


def test_the_run_ends_with_the_calibration_calibrate_would_fit(short_run: Path, tmp_path: Path) -> None:
    """One `lipstream train` command makes the kind of file that ships, weights and calibration: the
    fit `python -m lipstream.training.calibrate` makes on the raw export, stored in both places."""
    from lipstream.training import calibrate
    from lipstream.training.export import set_metadata

    meta = read_metadata(short_run / "motion.onnx")
    fitted = meta["calibration"]
    assert fitted["command"] == ("python -m lipstream.training.calibrate --utterances 2 --prompts 0 --seed 1 "
                                 "--write")
    assert fitted["fitted_on"] == "2 synthetic held-out utterances, seed 1"
    assert OnnxMotionModel(short_run / "motion.onnx").calibration != IDENTITY
    proto = onnx.load(str(short_run / "motion.onnx"))
    set_metadata(proto, {k: v for k, v in meta.items() if k != "calibration"})
    raw = tmp_path / "raw.onnx"
    onnx.save(proto, str(raw))
    assert OnnxMotionModel(raw).calibration == IDENTITY
    calibrate.main(["--model", str(raw), "--utterances", "2", "--write"])
    again = read_metadata(raw)["calibration"]
    assert (again["gain"], again["offset"]) == (fitted["gain"], fitted["offset"])
    summary = json.loads((short_run / "summary.json").read_text())
    assert summary["calibration"] == {"gain": fitted["gain"], "offset": fitted["offset"]}


def test_a_calibration_that_fails_after_training_says_where_the_network_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from lipstream.cli import main
    from lipstream.errors import SpeechEngineError
    from lipstream.training import calibrate

    def no_voices(utterances: int, prompts: int, seed: int) -> None:
        raise SpeechEngineError("no held-out voice could speak: install piper-tts or espeak-ng")

    monkeypatch.setattr(calibrate, "fit_set", no_voices)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--val-every", "1", "--batch-size", "2",
                 "--pool-utterances", "2", "--val-utterances", "1", "--threads", "1",
                 "--calibrate-utterances", "3", "--calibrate-prompts", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no held-out voice could speak" in err
    assert f"the trained network is in {out / 'motion.onnx'}, not calibrated" in err
    assert f"calibrate --utterances 3 --prompts 0 --seed 1 --model {out / 'motion.onnx'} --write" in err
    assert OnnxMotionModel(out / "motion.onnx").calibration == IDENTITY


def test_unusable_model_files_are_refused_with_a_reason(short_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        OnnxMotionModel(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes((short_run / "motion.onnx").read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a valid ONNX"):
        OnnxMotionModel(corrupt)
    proto = onnx.load(str(short_run / "motion.onnx"))
    meta = json.loads(proto.metadata_props[0].value)
    proto.metadata_props[0].value = json.dumps({**meta, "format": "lipstream.motion/0"})
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ModelError, match="retrain"):
        OnnxMotionModel(tmp_path / "old.onnx")
    proto.metadata_props[0].value = json.dumps({**meta, "mel": {**meta["mel"], "n_mels": 64}})
    onnx.save(proto, str(tmp_path / "mel64.onnx"))
    with pytest.raises(ModelError, match="mel settings"):
        OnnxMotionModel(tmp_path / "mel64.onnx")
    proto.metadata_props[0].key = "other"
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelError, match=f"no '{METADATA_KEY}' metadata"):
        OnnxMotionModel(tmp_path / "foreign.onnx")


def test_metadata_that_disagrees_with_the_graph_is_refused(tmp_path: Path) -> None:
    """An edited or copied metadata entry is refused when the file is opened, not with an
    onnxruntime traceback on the first frame of a render or a session."""
    path = shipped_model_path()
    assert path is not None, "no lipstream/models/motion.onnx: run lipstream train --install"
    proto = onnx.load(str(path))
    meta = json.loads(proto.metadata_props[0].value)
    for name, value, reason in (
            ("window", {**meta, "context_frames": meta["context_frames"] - 4}, "graph takes mel input"),
            ("huge", {**meta, "lookahead_frames": 100_000}, "graph takes mel input"),
            ("empty", {**meta, "context_frames": 0, "lookahead_frames": 0}, "context_frames"),
            ("bool", {**meta, "context_frames": True}, "context_frames"),
            ("list", [1, 2], "not a JSON object")):
        proto.metadata_props[0].value = json.dumps(value)
        onnx.save(proto, str(tmp_path / f"{name}.onnx"))
        with pytest.raises(ModelError, match=reason):
            load_motion_model(str(tmp_path / f"{name}.onnx"))


# --- the shipped model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> OnnxMotionModel:
    assert shipped_model_path() is not None, "no lipstream/models/motion.onnx: run lipstream train --install"
    model = load_motion_model(None)
    assert isinstance(model, OnnxMotionModel)
    return model


def _jaw_per_video_frame(model: OnnxMotionModel, audio: np.ndarray) -> np.ndarray:
    """Jaw opening for every video frame, with the windows the engine would cut, in one batch."""
    from lipstream.engine.mel import video_frame_window
    from lipstream.training.validation import pad_for_windows

    mel = pad_for_windows(log_mel(audio), model.context_frames, model.lookahead_frames)
    offset = model.context_frames - 1
    windows = [mel[a + offset : b + offset] for a, b in
               (video_frame_window(n, model.context_frames, model.lookahead_frames)
                for n in range(len(audio) // 640))]
    return model.runner.run(np.stack(windows)).controls[:, JAW_OPEN]


def test_shipped_model_follows_heldout_voices(shipped: OnnxMotionModel) -> None:
    from lipstream.training import corpus

    stream = corpus.utterances("heldout", seed=12345, augment=False)
    pred, truth = [], []
    for _ in range(4):
        utt = next(stream)
        pred.append(_jaw_per_video_frame(shipped, utt.audio))
        truth.append(utt.controls[3::4, JAW_OPEN][: len(pred[-1])])
        pred[-1] = pred[-1][: len(truth[-1])]
    corr = np.corrcoef(np.concatenate(pred), np.concatenate(truth))[0, 1]
    assert corr >= 0.6, f"jaw_open correlation with the phone-derived truth on held-out voices: {corr:.2f}"


def test_shipped_model_rests_in_silence_and_breath(shipped: OnnxMotionModel) -> None:
    from lipstream.training.quiet import swelling_noise

    assert _jaw_per_video_frame(shipped, np.zeros(32_000, np.float32)).max() < 0.05
    window = np.full((shipped.context_frames + shipped.lookahead_frames, 80), SILENCE_LOG_MEL, np.float32)
    assert shipped.predict(window).controls.max() < 0.05
    for level in (-50, -40, -35):  # an inhalation near the microphone: air noise, 400-3500 Hz
        assert _jaw_per_video_frame(shipped, swelling_noise(400, 3500, level)).max() < 0.15
    for level in (-60, -50, -40):  # air blown onto the microphone, rumble: below 1 kHz
        assert _jaw_per_video_frame(shipped, swelling_noise(0, 1000, level)).max() < 0.15


def test_mouth_stays_closed_when_nobody_speaks(shipped: OnnxMotionModel) -> None:
    """Every quiet probe (hiss, fan, hum, breaths, blown air, rumble, wind pops, typing) through
    the engine as a stream would go: no control reaches benchmarks/rest.py's rest limit (0.15). The
    model shipped before session 14 rounded the lips to 0.17 on air blown at -40 dBFS."""
    from lipstream.engine.avatar import Avatar, AvatarConfig
    from lipstream.engine.engine import Engine
    from lipstream.training.quiet import PROBES, REST_LIMIT

    avatar = Avatar.default(AvatarConfig(size=128))
    for name, make in PROBES.items():
        engine = Engine(avatar, model=shipped)
        engine.push_audio(make(), 16_000)
        engine.finish()
        controls = []
        while (frame := engine.pop_frame(render=False)) is not None:
            controls.append(frame.controls)
        shown = np.stack(controls)
        assert shown.max() < REST_LIMIT, f"{name}: {shown.max(axis=0).round(2)}"


def test_articulation_losses_see_a_mumbling_mouth() -> None:
    """A prediction that follows the truth at 80% of its swing (regression to the mean) costs in the
    velocity and spread terms, and their gradient widens it; the truth itself costs nothing."""
    from lipstream.training.losses import control_losses

    t = torch.linspace(0, 6 * np.pi, 120)
    truth = (0.5 + 0.4 * torch.sin(t))[None, :, None].repeat(2, 1, N_CONTROLS)
    weights = torch.ones(N_CONTROLS)
    exact = control_losses(truth, truth, weights)
    assert float(exact.velocity) == 0 and float(exact.spread) == 0
    gain = torch.tensor(0.8, requires_grad=True)
    mumbled = control_losses(0.5 + gain * (truth - 0.5), truth, weights)
    assert float(mumbled.spread.detach()) > 0 and float(mumbled.velocity.detach()) > 0
    (mumbled.spread + mumbled.velocity).backward()
    assert gain.grad is not None and float(gain.grad) < 0  # descending the loss raises the gain


def test_fine_tuning_starts_from_the_exported_weights(short_run: Path) -> None:
    """--init-from: the exported file's weights (BatchNorms folded into the convs) come back into a
    MotionNet that predicts what the file predicts."""
    from lipstream.engine.runners import TorchRunner
    from lipstream.training.model import ModelConfig, MotionNet, WindowMotionNet
    from lipstream.training.warmstart import load_exported

    net = MotionNet(ModelConfig())
    load_exported(net, short_run / "motion.onnx")
    rng = np.random.default_rng(1)
    mel = (rng.standard_normal((8, net.config.window_frames, 80)) - 5).astype(np.float32)
    ours = OnnxRunner(short_run / "motion.onnx").run(mel)
    theirs = TorchRunner(WindowMotionNet(net.eval())).run(mel)
    np.testing.assert_allclose(theirs.controls, ours.controls, atol=1e-4)
    with pytest.raises(ModelError, match="--channels"):
        load_exported(MotionNet(ModelConfig(channels=64)), short_run / "motion.onnx")


class _Killed(Exception):
    """Stands for the run's process being killed part-way."""


def test_a_stopped_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after its first validation, `lipstream train --resume` ends with the weights and loss
    curve of a run never stopped: no optimiser, schedule or random state is lost on the way."""
    from lipstream.cli import main
    from lipstream.training.features import CropSampler

    def run(out: Path, *extra: str) -> int:
        return main(["train", "--out", str(out), "--steps", "6", "--val-every", "3", "--batch-size", "4",
                     "--pool-utterances", "4", "--val-utterances", "1", "--threads", "1", "--seed", "5",
                     "--calibrate-utterances", "0", "--calibrate-prompts", "0", *extra])

    assert run(tmp_path / "whole") == 0
    batches = CropSampler.batch
    calls = iter(range(100))

    def killed_in_step_five(sampler: CropSampler, size: int) -> object:
        if next(calls) == 4:  # after the state of step 3's validation was saved
            raise _Killed
        return batches(sampler, size)

    monkeypatch.setattr(CropSampler, "batch", killed_in_step_five)
    with pytest.raises(_Killed):
        run(tmp_path / "cut")
    monkeypatch.undo()
    assert run(tmp_path / "cut", "--resume", "--lr", "0.001") == 2  # other options: refused
    assert run(tmp_path / "cut", "--resume") == 0
    whole, cut = (torch.load(tmp_path / run_dir / "checkpoint.pt", weights_only=True)["state_dict"]
                  for run_dir in ("whole", "cut"))
    for name, tensor in whole.items():
        torch.testing.assert_close(cut[name], tensor, msg=name)
    rows = [json.loads((tmp_path / run_dir / "loss.json").read_text()) for run_dir in ("whole", "cut")]
    curves = [[(row["step"], row["train_loss"]) for row in run_rows] for run_rows in rows]
    assert curves[1] == curves[0]
