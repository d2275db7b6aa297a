#!/usr/bin/env bash
# One command on a fresh NVIDIA GPU machine: verifies the GPU path that could not be run where it
# was written. It installs lipstream with the `gpu` extra into a venv, runs the `gpu`-marked tests
# and benchmarks/gpu.py, and prints a verdict table. About 2-4 minutes, most of it the TensorRT
# download; it exits 0 only when every GPU check passed (a skip on a GPU machine is not a pass).
#
#   benchmarks/gpu_check.sh     VENV=path: the venv to use (default .venv-gpu); SKIP_INSTALL=1: use it as is;
#                               EXTRA_PACKAGES="...": more pip requirements (see below);
#                               NO_NVENC=1: the GPU has no video encoder (H100, A100), so its NVENC
#                               tests are expected to skip and do not fail the verdict
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
# The newest cuda-python and TensorRT wheels target CUDA 13; on a driver older than CUDA 13 pin them,
# e.g. EXTRA_PACKAGES="cuda-python[all]<13 tensorrt-cu12" (nvidia-smi prints the driver's CUDA).
EXTRA_PACKAGES=${EXTRA_PACKAGES:-}
OUT=${OUT:-benchmarks/results}
STEP_TIMEOUT_S=240  # no single step may eat the 5-minute budget
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"

step() {  # step NAME COMMAND...: run it, log its output, record status and seconds
  local name=$1 start=$SECONDS status
  shift
  echo "gpu_check: $name..." >&2
  timeout "$STEP_TIMEOUT_S" "$@" >>"$LOG" 2>&1
  status=$?
  echo "$name $status $((SECONDS - start))" >>"$OUT/gpu_check.steps"
  return "$status"
}

rm -f "$OUT/gpu_check.steps"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$LOG"
else
  echo "gpu_check: nvidia-smi not found: this machine has no NVIDIA driver" | tee -a "$LOG"
fi

install() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip &&
    "$VENV/bin/python" -m pip install -q -e ".[gpu]" "pytest>=8" "pytest-asyncio>=0.23" $EXTRA_PACKAGES
}
if [ -n "${SKIP_INSTALL:-}" ]; then  # a venv that already has lipstream[gpu]
  echo "install 0 0" >>"$OUT/gpu_check.steps"
else
  step install install
fi
# every test module with a gpu-marked test (listing them by hand once left one out)
mapfile -t GPU_TEST_FILES < <(grep -l "pytest.mark.gpu" tests/test_*.py)
step gpu-tests "$VENV/bin/python" -m pytest -m gpu -rs -p no:cacheprovider \
  --junitxml="$OUT/gpu_tests.xml" "${GPU_TEST_FILES[@]}"
step benchmark "$VENV/bin/python" benchmarks/gpu.py --out "$OUT/gpu.json"

python3 - "$OUT" <<'EOF'
import json, os, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
rows, bad = [], 0
for line in (out / "gpu_check.steps").read_text().split("\n"):
    if line:
        name, status, seconds = line.split()
        rows.append((f"step {name}", "PASS" if status == "0" else f"FAIL (exit {status})", f"{seconds} s"))
        bad += status != "0"
junit = out / "gpu_tests.xml"
if junit.is_file():
    for case in ET.parse(junit).iter("testcase"):
        skipped = case.find("skipped")
        failed = case.find("failure") is not None or case.find("error") is not None
        verdict = "FAIL" if failed else "SKIP" if skipped is not None else "PASS"
        note = (skipped.get("message", "") if skipped is not None else "")[:70]
        name = case.get("name", "?")
        if verdict == "SKIP" and os.environ.get("NO_NVENC") and "nvenc" in name:
            verdict = "SKIP (no NVENC)"  # said by the user: this GPU has no video encoder
        rows.append((name, verdict, note))
        bad += verdict not in ("PASS", "SKIP (no NVENC)")  # on a GPU machine a skip means something is missing
bench = out / "gpu.json"
if bench.is_file():
    r = json.loads(bench.read_text())
    if r.get("gpu"):
        best = max(r["sessions_per_gpu_by_batch"].items(), key=lambda kv: kv[1])
        rows.append(("GPU", r["gpu"], f"model runner {r['model']['runner']}"))
        rows.append(("sessions per GPU stream", str(best[1]), f"at batch {best[0]}"))
        nvenc = r["encode"].get("h264_nvenc", {})
        rows.append(("NVENC 512 px", f"{nvenc.get('fps', 0):.0f} fps" if nvenc.get("available")
                     else "not available", nvenc.get("why", "")[:70]))
    else:
        rows.append(("GPU", "none found", r.get("reason", "")[:70]))
        bad += 1
width = max(len(r[0]) for r in rows)
print(f"\n{'check':<{width}}  {'verdict':<14}  note")
for name, verdict, note in rows:
    print(f"{name:<{width}}  {verdict:<14}  {note}")
print(f"\nverdict: {'GPU PATH VERIFIED' if bad == 0 else f'{bad} check(s) not passed'} (log: {out}/gpu_check.log)")
sys.exit(1 if bad else 0)
EOF
