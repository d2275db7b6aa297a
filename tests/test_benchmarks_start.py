"""Every benchmark script still starts (its imports resolve and its arguments parse): they are run
by hand, so a moved helper would otherwise break them unnoticed (capacity.py once did)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_starts(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr[-2000:]
