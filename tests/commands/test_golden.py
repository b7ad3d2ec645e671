"""Terminal output of `gradguard show`, `gradguard check` and `gradguard diagnose` at a fixed width,
against golden files in tests/golden/ (GRADGUARD_UPDATE_GOLDEN=1 rewrites them, as for the HTML).

The inputs are deterministic: a run built from fixed arrays and written to a store (show,
diagnose), and a seeded model checked on a seeded batch (check). What varies between machines and
days -- the store's path and creation time -- is replaced before comparing.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradguard.cli import main
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_SAT_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_NORM,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LOSS,
    LR,
    NONFINITE,
    UPDATE_RATIO,
    WEIGHT_NORM,
)
from gradguard.record.batch import Batch, Event, Layer
from gradguard.runs.store import Store

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
WIDTH = "100"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("GRADGUARD_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from the golden file; if intended, rerun with GRADGUARD_UPDATE_GOLDEN=1"
    )


def _normalise(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+\-Z0-9:]*", "<time>", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def vanishing_store(tmp: Path) -> Path:
    """A 6-layer sigmoid-like run: gradients falling x0.2 per layer toward the input, 40 steps."""
    rng = np.random.default_rng(0)
    s, n = 40, 6
    steps = np.arange(s)
    depth = 0.2 ** np.arange(n - 1, -1, -1)  # (layers,) the first layer gets the least
    noise = np.exp(0.05 * rng.standard_normal((s, n)))
    grad = 0.5 * depth * noise  # (steps, layers)
    detail = steps[::5]
    layers = [
        Layer(i, f"net.{2 * i}", "Linear", 272, True, "Sigmoid" if i < n - 1 else None)
        for i in range(n)
    ]
    batch = Batch(
        metrics={
            GRAD_NORM: (steps, grad),
            GRAD_RMS: (steps, grad / 16.5),
            WEIGHT_NORM: (steps, np.full((s, n), 4.0)),
            NONFINITE: (steps, np.zeros((s, n))),
            UPDATE_RATIO: (detail, 1e-3 * depth * np.ones((len(detail), n))),
            ACT_STD: (detail, np.full((len(detail), n), 0.2)),
            ACT_ZERO_FRAC: (detail, np.zeros((len(detail), n))),
            ACT_SAT_FRAC: (detail, np.full((len(detail), n), 0.02)),
            ACT_GRAD_NORM: (detail, 0.3 * depth * np.ones((len(detail), n))),
        },
        scalars={
            LOSS: (steps, 1.1 - 0.001 * steps),
            LR: (steps, np.full(s, 0.1)),
            GRAD_NORM_TOTAL: (steps, np.sqrt((grad**2).sum(1))),
        },
        events=[Event(step=12, kind="note", message="hand-written event")],
        layers=layers,
    )
    path = tmp / "golden.db"
    store = Store(path)
    env = {"gradguard": "0", "torch": "2", "python": "3", "device": "cpu"}
    run_id, _ = store.create_run("vanishing", {"optimizer": "SGD", "residual": False}, env)
    store.write(run_id, batch)
    store.close()
    return path


def test_show_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = vanishing_store(tmp_path)
    assert main(["show", str(db), "--width", WIDTH]) == 0
    check_golden("show.txt", _normalise(capsys.readouterr().out, tmp_path))


def test_diagnose_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = vanishing_store(tmp_path)
    assert main(["diagnose", str(db), "--width", WIDTH]) == 0
    out = _normalise(capsys.readouterr().out, tmp_path)
    assert "vanishing gradients" in out
    check_golden("diagnose.txt", out)


MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    def deep_tanh():
        torch.manual_seed(0)
        layers = []
        for _ in range(8):
            layers += [nn.Linear(16, 16), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(16, 3)), torch.randn(32, 16)
    """
)


def test_check_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    main(["check", f"{models}:deep_tanh", "--width", WIDTH])
    out = _normalise(capsys.readouterr().out, tmp_path)
    assert "verdict" in out
    check_golden("check.txt", out)
