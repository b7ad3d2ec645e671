"""benchmarks/keras_overhead.py stays runnable: end to end at a tiny size (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.keras._backend import SRC

ROOT = Path(__file__).resolve().parents[2]


def test_keras_overhead_benchmark_runs_tiny(tmp_path: Path) -> None:
    out = tmp_path / "keras.json"
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "keras_overhead.py")]
        + [
            "--epochs",
            "2",
            "--steps",
            "3",
            "--repeats",
            "1",
            "--paired",
            "2",
            "--instances",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| K1 MLP | watch |" in proc.stdout and "| K2 transformer | tb-hist |" in proc.stdout
    data = json.loads(out.read_text())
    modes = {"bare", "grads", "watch", "tb-hist"}
    for name in ("K1 MLP", "K2 transformer"):
        assert set(data[name]) == modes | {"step", "paired"}
        assert set(data[name]["step"]) == modes
        assert set(data[name]["paired"]) == {"bare", "grads", "watch", "detail"}
        assert all(data[name][m] > 0 and data[name]["step"][m] > 0 for m in modes)
        assert all(v > 0 for v in data[name]["paired"].values())
