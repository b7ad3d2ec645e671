"""A store written by gradguard 0.1.0 before the refactor into stages (tests/fixtures/store_v0.1.0.db,
written by revision fabc0d7: a 2-layer tanh MLP, config "full", 6 SGD steps, one event) opens,
reads, shows and takes a new run: the SQLite schema did not change."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.cli import main
from gradguard.metrics import GRAD_NORM, GRAD_NORM_TOTAL, LAYER_METRICS, LOSS, LR
from gradguard.runs.store import list_runs

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "store_v0.1.0.db"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(OLD, path)  # opening may add -wal/-shm files: keep the fixture untouched
    return path


def test_old_store_reads_back(old_store: Path) -> None:
    run = gg.load(old_store)
    assert run.name == "old" and run.layer_names == ["0", "2"]
    assert set(run.metric_names) == set(LAYER_METRICS)
    assert set(run.scalar_names) == {GRAD_NORM_TOTAL, LOSS, LR}
    steps, gn = run.metric(GRAD_NORM)
    assert steps.tolist() == list(range(6)) and gn.shape == (6, 2) and np.isfinite(gn).all()
    # the total is the root of the per-layer squares, as the old writer computed it
    np.testing.assert_allclose(run.scalar(GRAD_NORM_TOTAL)[1], np.sqrt((gn**2).sum(1)), rtol=1e-12)
    assert [e.message for e in run.events] == ["written by gradguard before the refactor"]


def test_old_store_shows_and_takes_a_new_run(
    old_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(old_store), "--width", "100"]) == 0
    assert "run old" in capsys.readouterr().out
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, store=old_store, name="new", diagnose_online=False) as mon:
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
    names = [name for name, _ in list_runs(old_store)]
    assert names == ["old", "new"]
    assert gg.load(old_store, "old").metric(GRAD_NORM)[0].tolist() == list(range(6))
    assert mon.run.metric(GRAD_NORM)[0].tolist() == [0]
