"""Run ``tests/keras/_cases.py`` in a fresh process for one Keras backend and return its numbers.

Keras picks its backend once per process (``KERAS_BACKEND`` at import), so each backend's cases
run in a subprocess of their own and one ``pytest`` command tests every backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CASES = Path(__file__).with_name("_cases.py")
SRC = Path(__file__).resolve().parents[2] / "src"

# per-layer gradient norms and the loss against the backend's own autodiff
RTOL = 1e-5


def run_cases(backend: str, tmp: Path, *cases: str) -> dict[str, Any]:
    """Every case's result (a case that raised holds ``{"error": traceback}``)."""
    out = tmp / f"{backend}.json"
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, str(CASES), str(out), *cases],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"{backend} cases failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["backend"] == backend
    return result


def case(result: dict[str, Any], name: str) -> Any:
    got = result[name]
    if isinstance(got, dict) and "error" in got:
        pytest.fail(f"case {name} raised:\n{got['error']}")
    return got


def assert_gradients_match(models: dict[str, Any]) -> None:
    """Per-layer norms and the loss at step 0 equal the reference within RTOL, every layer."""
    for name, m in models.items():
        assert not m["failures"], f"{name}: {m['failures']}"
        assert m["steps"][0] == 0, name
        assert set(m["got"]) == set(m["ref"]), (name, m["got"], m["ref"])
        for layer, ref in m["ref"].items():
            assert m["got"][layer] == pytest.approx(ref, rel=RTOL), (name, layer)
        assert m["loss"] == pytest.approx(m["ref_loss"], rel=RTOL), name
        assert m["optimizer_vars_restored"], name
        # ||dL/dh|| of step 0 (weights before the update) against the backend's autodiff on the
        # rest of the network written out as a function of h; measured on every layer
        assert m["agn_steps"][0] == 0, name
        assert all(v > 0 for v in m["agn"].values()), (name, m["agn"])
        for layer, ref in (m["ref_agn"] or {}).items():
            assert m["agn"][layer] == pytest.approx(ref, rel=RTOL), (name, layer)
        # activation statistics of step 0 (inference mode) against numpy on a one-output view
        assert m["act_steps"][0] == 0, name
        for layer, (std, zero) in m["ref_act"].items():
            assert m["act_std"][layer] == pytest.approx(std, rel=1e-4), (name, layer)
            assert m["act_zero"][layer] == pytest.approx(zero, abs=1e-6), (name, layer)
