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


def test_fix_summary_counts_each_half(capsys, monkeypatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "trainability", ROOT / "benchmarks/trainability.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "trainability", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    cfg = bench.Config
    twin = cfg("mlp", "relu", 4, "he", "adam")  # trains: an init can fix relu/d4/adam
    can = cfg("mlp", "relu", 4, "default", "adam")
    cannot = [cfg("mlp", "tanh", 48, i, "sgd") for i in ("he", "xavier", "default")]
    bad = [can, *cannot]
    possible = {bench._arch_of(twin)}

    def row(trains: bool, changed: str = "x") -> dict:
        best = 0.95 if trains else 0.5
        return {"changed": changed, "judged": trains, "needs_arch": True, "best": best,
                "trains": trains}  # fmt: skip

    cache = {
        f"init:{can.key}": {**row(True), "needs_arch": False},
        f"init:{cannot[0].key}": row(True),  # an init fixed it after all
        f"init:{cannot[1].key}": row(False),
        f"init:{cannot[2].key}": row(False),
        f"arch:{cannot[1].key}": row(True, "residual"),
        f"arch:{cannot[2].key}": row(False, "residual"),
    }
    bench._fix_summary("test", bad, possible, cache)
    out = capsys.readouterr().out
    assert "where some init of the grid trains the same architecture: 1/1 train" in out
    assert "where no init of the grid does: 1/3 train" in out
    assert "needs_architecture_change agrees with the grid on 4/4" in out
    assert "where no init of the grid trains the architecture: 2/3 train" in out
    assert "on the 2 the init-only fix left untrainable: 1/2 train" in out
    assert "all together: 3/4 train after gg.fix" in out
