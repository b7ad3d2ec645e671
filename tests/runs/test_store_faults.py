"""Store failures are reported as what they are, and nothing is lost silently (issue 13, item 5)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

import gradguard as gg
from gradguard.metrics import GRAD_NORM


def _train(mon: gg.Monitor, model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(8, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.log(loss=loss)


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_disk_full_is_reported_as_disk_full(tmp_path: Path) -> None:
    # regression: a full disk showed as "cannot rollback - no transaction is active", the
    # ROLLBACK after SQLite's own rollback hiding the real error
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), *(nn.Linear(16, 16) for _ in range(30)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = gg.watch(model, opt, store=tmp_path / "full.db", flush_every=10, diagnose_online=False)
    store = mon.run_log.store
    assert store is not None
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(40):  # ~30 kB of metrics per flush: more than the file's free pages
            loss = model(torch.randn(8, 4)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
        mon.close()
    messages = [str(w.message) for w in caught if "gradguard" in str(w.message)]
    assert any("database or disk is full" in m for m in messages), messages
    assert not any("no transaction is active" in m for m in messages)
    assert mon.run.metric(GRAD_NORM)[0].tolist() == list(range(40))  # memory kept it all


def test_deleted_store_is_reported_not_silent(tmp_path: Path) -> None:
    # regression: a store deleted during training lost what it had committed without a word
    model, opt = _model()
    path = tmp_path / "gone.db"
    mon = gg.watch(model, opt, store=path, flush_every=5, diagnose_online=False)
    _train(mon, model, opt, 10)
    mon.flush()
    for f in tmp_path.glob("gone.db*"):
        f.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(mon, model, opt, 10)
        mon.close()
        run = mon.run
    messages = [str(w.message) for w in caught]
    assert any("deleted or replaced" in m for m in messages), messages
    # what was not committed before the deletion was noticed is still in memory
    assert run.metric(GRAD_NORM)[0].tolist()[-10:] == list(range(10, 20))
