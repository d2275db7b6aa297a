"""`benchmarks/gpu_check.sh`, run where there is no GPU: it must run every gpu-marked test, say
plainly that there is no GPU, and fail (exit 1) rather than crash or pass."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GPU_TEST = re.compile(r"@pytest\.mark\.gpu\n(?:@.*\n)*def (test_\w+)")


def gpu_marked_tests() -> set[str]:
    modules = (REPO / "tests").glob("test_*.py")
    return {name for path in modules for name in GPU_TEST.findall(path.read_text())}


def test_gpu_check_without_a_gpu_runs_every_gpu_test_and_fails_saying_why(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: the check would really run")
    env = {**os.environ, "SKIP_INSTALL": "1", "VENV": sys.prefix, "OUT": str(tmp_path), "NO_NVENC": "1"}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert len(gpu_marked_tests()) >= 8
    runs = {}
    for name in gpu_marked_tests():
        runs[name] = [row for key, row in rows.items() if key == name or key.startswith(f"{name}[")]
        # NO_NVENC=1: the user says the GPU has no encoder, so the NVENC tests' skip is expected
        expected = " SKIP (no NVENC) " if "nvenc" in name else " SKIP "
        assert runs[name] and all(expected in row for row in runs[name]), f"{name} not run by gpu_check.sh"
    assert "none found" in rows["GPU"] and "no CUDA device" in rows["GPU"]
    failing = sum(len(rows) for name, rows in runs.items() if "nvenc" not in name) + 1  # + no GPU
    assert result.stdout.splitlines()[-1].startswith(f"verdict: {failing} check(s) not passed")
