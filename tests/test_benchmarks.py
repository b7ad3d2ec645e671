"""The benchmarks stay runnable: each runs end to end at tiny sizes (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_overhead_benchmark_runs_quick(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| W1 | watch |" in proc.stdout and "| W2 | histc |" in proc.stdout
    data = json.loads(out.read_text())
    for name in ("W1", "W2"):
        med = data["workloads"][name]["median_s"]
        assert set(med) == {"bare", "bare2", "watch", "grad-only", "item", "histc"}
        assert all(v > 0 for v in med.values())


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_check_benchmark_runs_small() -> None:
    out = _run(
        "benchmarks/check.py", "--repeats", "1", "--depth", "4", "--width", "16", "--batch", "8"
    )
    assert "median" in out


def test_clip_benchmark_runs_one_round() -> None:
    out = _run("benchmarks/clip.py", "--rounds", "1", "--threads", "1")
    for method in ("AutoClip", "AGC", "ZClip"):
        assert method in out


def test_diagnosis_calibration_runs_small() -> None:
    out = _run(
        "benchmarks/diagnosis_calibration.py",
        "--only",
        "exploding_training",
        "--set",
        "steps",
        "15",
    )
    lines = [line for line in out.splitlines() if line.startswith("| exploding_training: ")]
    assert len(lines) == 8 and all(line.count("|") == 10 for line in lines)


def test_gpu_check_says_plainly_when_there_is_no_cuda() -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine run the real check instead
        out = _run("benchmarks/gpu_check.py", "--sync-only")
        assert "no host sync on the training path" in out
        return
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "needs a CUDA device" in proc.stderr
