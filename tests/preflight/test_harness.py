"""The grid harness's fast subset (benchmarks/trainability.py --fast): 8 configurations trained
with the learning-rate sweep, the verdict compared with the outcome."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fast_grid_verdicts_agree_with_training() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/trainability.py", "--fast", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(s for s in proc.stdout.splitlines() if s.startswith("all: "))
    n, agree, false_t = re.match(
        r"all: (\d+) configurations, agreement ([\d.]+)%, false 'trainable' ([\d.]+)%", line
    ).groups()
    assert int(n) == 8
    assert float(agree) >= 87.5  # at most one of the eight missed
    assert float(false_t) == 0.0
    assert "| trainable |" in proc.stdout and "| not trainable |" in proc.stdout
