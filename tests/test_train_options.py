"""`lipstream train` refuses what it cannot use with one line and exit 2, before the minutes of
corpus synthesis a run starts with (a tripwire on `build_pool` proves the order)."""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lipstream.cli import main
from lipstream.engine.constants import HOP_SAMPLES, SAMPLE_RATE
from lipstream.engine.controls import N_CONTROLS
from lipstream.engine.motion import shipped_model_path
from lipstream.training.features import CHUNK_UTTERANCES
from lipstream.training.features import build_pool as real_build_pool  # before the tripwire replaces it

torch = pytest.importorskip("torch", reason="training needs the 'train' extra (torch)")
onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'train' extra (onnx)")

SMALL = ["--calibrate-prompts", "0", "--steps", "2", "--val-every", "1", "--batch-size", "2",
         "--pool-utterances", "2", "--val-utterances", "1", "--threads", "1"]


class _Synthesised(Exception):
    """The run got as far as synthesising its corpus."""


@pytest.fixture(autouse=True)
def no_synthesis(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args: object, **kwargs: object) -> None:
        raise _Synthesised

    monkeypatch.setattr("lipstream.training.features.build_pool", tripwire)


def _refused(capsys: pytest.CaptureFixture[str], out: Path, *options: str) -> str:
    """Run `lipstream train` with `options`; return its one-line error."""
    code = main(["train", "--out", str(out), *SMALL, *options])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("lipstream train: error: ")
    return err


@pytest.mark.parametrize(("options", "named"), [
    (["--steps", "0"], "--steps 0"), (["--steps", "-3"], "--steps -3"), (["--seed", "-1"], "--seed -1"),
    (["--batch-size", "0"], "--batch-size"), (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--channels", "0"], "--channels"), (["--dilations", "1", "0"], "--dilations 1 0"),
    (["--context-ms", "0"], "--context-ms"), (["--context-ms", "25"], "multiple of 10"),
    (["--lookahead-ms", "-10"], "--lookahead-ms"), (["--context-ms", "3000"], "to 2560 ms"),
    (["--context-ms", "100", "--lookahead-ms", "0"], "190 to"), (["--val-every", "0"], "--val-every"),
    (["--pool-utterances", "0"], "--pool-utterances"), (["--val-utterances", "0"], "--val-utterances"),
    (["--threads", "0"], "--threads"), (["--velocity-weight", "-1"], "--velocity-weight"),
    (["--vtlp", "1.5"], "--vtlp 1.5: use a share from 0 to 1"), (["--vtlp", "nan"], "--vtlp nan"),
    (["--pitch", "-0.1"], "--pitch -0.1: use a share from 0 to 1"),
    (["--prompts", "1.5"], "--prompts 1.5: use a share from 0 to 1"),
    (["--calibrate-utterances", "-1"], "--calibrate-utterances and --calibrate-prompts count utterances"),
    (["--calibrate-gains", "0.5", "1", "1", "1", "1"], "--calibrate-gains 0.5 1 1 1 1: each gain from 1"),
    (["--calibrate-utterances", "0", "--calibrate-gains", "1", "1", "1", "1", "1"], "nothing to fit on"),
    # petabytes for a step at the default width, or for the weights alone: more than any machine has
    (["--batch-size", "10000000"], "--batch-size 10000000: one training step needs"),
    (["--channels", "1000000"], "--channels 1000000: one training step needs"),
])
def test_options_out_of_range_are_refused_with_the_range(
        options: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert named in _refused(capsys, tmp_path / "run", *options)
    assert not (tmp_path / "run").exists()


def test_outputs_that_cannot_be_written_are_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert "is a file" in _refused(capsys, a_file)
    assert "is a file" in _refused(capsys, tmp_path / "run", "--export", str(a_file / "motion.onnx"))
    assert "is a folder" in _refused(capsys, tmp_path / "run", "--export", str(tmp_path))


def test_a_calibration_on_prompts_that_are_not_installed_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The run ends with the calibration fit: missing prompts must not surface after 20 minutes."""
    from lipstream.training import prompts

    monkeypatch.setattr(prompts, "TRANSCRIPTS", tmp_path / "core-sounds-en.txt.gz")
    err = _refused(capsys, tmp_path / "run", "--calibrate-prompts", "24")
    assert "--calibrate-prompts 24 needs the Asterisk prompts: apt-get install asterisk-core-sounds-en" in err
    assert "(or --calibrate-prompts 0)" in err and not (tmp_path / "run").exists()


def test_init_from_a_file_that_is_not_a_fitting_model_is_refused_before_synthesis(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    assert "not a valid ONNX" in _refused(capsys, tmp_path / "run", "--init-from", str(not_onnx))
    assert "exist" in _refused(capsys, tmp_path / "run", "--init-from", str(tmp_path / "absent.onnx"))
    shipped = shipped_model_path()
    assert shipped is not None, "no shipped model: run lipstream train --install"
    assert "--channels" in _refused(capsys, tmp_path / "run", "--init-from", str(shipped), "--channels", "8")
    # the same weight shapes, another model: the window split otherwise, or the dilations reordered
    for options in (["--context-ms", "200", "--lookahead-ms", "80"], ["--dilations", "2", "1", "4", "2"]):
        said = _refused(capsys, tmp_path / "run", "--init-from", str(shipped), *options)
        assert "--context-ms 240 --lookahead-ms 40 --dilations 1 2 2 4" in said


def test_resume_from_a_corrupt_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert "no saved state" in _refused(capsys, run, "--resume")
    (run / "resume.pt").write_text("garbage")
    assert "unreadable" in _refused(capsys, run, "--resume")
    torch.save({"weights": [1, 2, 3]}, run / "resume.pt")
    assert "not a lipstream training state" in _refused(capsys, run, "--resume")
    from lipstream.cli import build_parser
    from lipstream.training.train import config_from_args

    command = config_from_args(build_parser("train").parse_args(["train", *SMALL])).command()
    partial = {"step": 1, "command": command, "history": [], "torch_rng": 0, "sampler_rng": 0}
    torch.save(partial, run / "resume.pt")  # no weights: it would fail only after the synthesis
    assert "not a lipstream training state" in _refused(capsys, run, "--resume")


def test_sigterm_during_synthesis_ends_quietly(tmp_path: Path) -> None:
    """`kill` or Ctrl-C while the worker processes synthesise: exit 143 and no traceback; every
    forked worker inherited the CLI's SIGTERM handler and printed one as the pool ended it."""
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    before = set(Path(tempfile.gettempdir()).glob("lipstream-*"))
    train = subprocess.Popen([sys.executable, "-m", "lipstream", "train", "--out", str(tmp_path / "run"),
                              *SMALL[:-2], "--pool-utterances", "50", "--threads", "2"],
                             stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{train.pid}/task/{train.pid}/children")
    deadline = time.monotonic() + 60
    while not children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the pool's workers run
    time.sleep(0.5)
    train.send_signal(signal.SIGTERM)
    stderr = train.communicate(timeout=60)[1]
    assert train.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    # A worker ended part-way through a Festival batch leaves its folder in the pool's scratch
    # folder, and the pool removes that once its workers have ended
    left = set(Path(tempfile.gettempdir()).glob("lipstream-*")) - before
    assert not left, sorted(map(str, left))


@dataclass(frozen=True)
class _Tone:
    """An utterance as a source yields one: audio with per-mel-frame targets."""

    audio: np.ndarray
    visemes: np.ndarray
    controls: np.ndarray
    engine: str = "tone"
    voice: str = "a"
    language: str = "en"


def _tones(split: str, seed: int, augment: bool) -> Iterator[_Tone]:
    """A source of short tones (module-level: the worker processes unpickle it by name)."""
    frames = SAMPLE_RATE // 5 // HOP_SAMPLES
    audio = np.sin(np.arange(frames * HOP_SAMPLES) * 0.1).astype(np.float32)
    while True:
        yield _Tone(audio, np.zeros(frames, np.int64), np.zeros((frames, N_CONTROLS), np.float32))


def test_synthesis_progress_counts_up_to_the_pool_size(caplog: pytest.LogCaptureFixture) -> None:
    """30 utterances in tasks of 25 and 5 were logged as 25/30, then 50/30."""
    count = CHUNK_UTTERANCES + 5
    with caplog.at_level(logging.INFO, logger="lipstream.training.features"):
        pool = real_build_pool("train", 0, count, workers=2, source=_tones)
    done = [int(r.getMessage().split()[-2].split("/")[0]) for r in caplog.records]
    assert len(pool) == count and done == [CHUNK_UTTERANCES, count], caplog.text


def _pair(folder: Path, graph: bytes, sidecar: str) -> Path:
    """motion.onnx and motion.json in `folder`, with these contents."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "motion.onnx").write_bytes(graph)
    (folder / "motion.json").write_text(sidecar)
    return folder / "motion.onnx"


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_install_replaces_the_shipped_pair_whole(tmp_path: Path) -> None:
    from lipstream.training.export import install

    shipped = tmp_path / "models"
    _pair(shipped, b"old graph", "{\"old\": 1}\n")
    new = _pair(tmp_path / "run", b"new graph", "{\"new\": 1}\n")
    assert install(new, shipped) == shipped / "motion.onnx"
    assert _contents(shipped) == _contents(new.parent)  # nothing else left behind


def test_install_on_a_disk_that_fills_leaves_the_shipped_pair_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills as the second file is copied (writes into /dev/full fail as a full disk's
    do): the model and its metadata are both the old ones, no partial file is left, and the
    error is one line. Before, the new graph was already in place beside a truncated sidecar."""
    import shutil

    from lipstream.errors import LipstreamError
    from lipstream.training.export import install

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to stand for a full disk")
    shipped = tmp_path / "models"
    _pair(shipped, b"old graph", "{\"old\": 1}\n")
    before = _contents(shipped)
    new = _pair(tmp_path / "run", b"new graph", "{\"new\": 1}\n")
    copies, real_copyfile = [], shutil.copyfile

    def filling(source: str | Path, target: str | Path) -> object:
        copies.append(target)
        if len(copies) < 2:
            return real_copyfile(source, target)
        Path(target).write_bytes(b"")  # opened for writing, then no space for a byte
        return real_copyfile(source, "/dev/full")

    monkeypatch.setattr(shutil, "copyfile", filling)
    with pytest.raises(LipstreamError, match="No space left on device") as refused:
        install(new, shipped)
    assert len(copies) == 2 and "\n" not in str(refused.value)
    assert _contents(shipped) == before


@pytest.mark.parametrize("option", ["--batch-size", "--channels"])
def test_the_largest_batch_or_width_named_is_the_largest_that_fits(option: str) -> None:
    """The refusal names the most the memory takes: that passes, and one more does not."""
    from lipstream.errors import ConfigError
    from lipstream.training.limits import check_step_memory
    from lipstream.training.model_config import ModelConfig

    budget, crop = 2e9, 256  # bytes: a small machine's share, the same on every machine
    sizes = {"--batch-size": 10**6, "--channels": 10**5}

    def check(value: int) -> None:
        batch, channels = (value, 192) if option == "--batch-size" else (32, value)
        check_step_memory(ModelConfig(channels=channels), batch, crop, budget)

    with pytest.raises(ConfigError, match=f"^{option} ") as refused:
        check(sizes[option])
    largest = int(str(refused.value).split("use at most ")[1].split()[0])
    check(largest)
    with pytest.raises(ConfigError, match="one training step needs"):
        check(largest + 1)
