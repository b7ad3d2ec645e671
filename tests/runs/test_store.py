"""The SQLite run store: round trip, durability under kill -9, bad input, failure isolation."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.runs.store import Store, list_runs
from tests.fixtures.models import mlp


def _train(mon: gg.Monitor, model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(8, 8)), torch.randint(0, 3, (8,)))
        loss.backward()
        opt.step()
        mon.log(loss=loss)


def test_round_trip_equals_memory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp(depth=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    db = tmp_path / "runs.db"
    with gg.watch(model, opt, store=db, name="first", detail_every=2, flush_every=3) as mon:
        _train(mon, model, opt, 7)
        mon.event("note", "hello", layer="2", value=1.5, data={"k": 1})
    mem = mon.run
    run = gg.load(db)
    assert run.name == "first"
    assert [lay.name for lay in run.layers] == ["0", "2", "4"]
    assert [lay.activation for lay in run.layers] == ["Tanh", "Tanh", None]
    assert set(run.metric_names) == set(__import__("gradguard.metrics").metrics.LAYER_METRICS)
    for m in run.metric_names:
        s1, v1 = run.metric(m)
        s2, v2 = mem.metric(m)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(v1, v2)
    for s in ("loss", "lr", "grad_norm_total"):
        np.testing.assert_array_equal(run.scalar(s)[1], mem.scalar(s)[1])
    assert list(run.metric("grad_norm")[0]) == list(range(7))
    assert list(run.metric("update_ratio")[0]) == [0, 2, 4, 6]
    (ev,) = [e for e in run.events if e.kind == "note"]
    assert (ev.step, ev.layer, ev.value, ev.message, ev.data) == (6, "2", 1.5, "hello", {"k": 1})
    assert run.environment["torch"] == torch.__version__
    assert run.config["watch"]["flush_every"] == 3

    # a second run in the same file; load() picks the last, name= any
    model2 = mlp(depth=2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    with gg.watch(model2, opt2, store=db) as mon2:
        _train(mon2, model2, opt2, 2)
    assert [n for n, _ in list_runs(db)] == ["first", "run-2"]
    assert gg.load(db).name == "run-2"
    assert len(gg.load(db, name="first").layers) == 3
    with pytest.raises(gg.GradguardError, match="no run named 'nope'"):
        gg.load(db, name="nope")


def test_to_pandas_long_tables(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    run = gg.Run.from_arrays(
        layers=["a", "b"],
        metrics={"grad_norm": ([0, 1], [[1.0, 2.0], [3.0, 4.0]])},
        scalars={"loss": ([0, 1], [0.5, 0.25])},
    )
    metrics, scalars = run.to_pandas()
    assert metrics.shape == (4, 4)
    row = metrics[(metrics.step == 1) & (metrics.layer == "a")]
    assert row.value.item() == 3.0
    assert scalars.value.tolist() == [0.5, 0.25]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    import gradguard as gg
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gg.watch(model, opt, store=sys.argv[1], name="killed", flush_every=1000)
    for step in range(1000000):
        opt.zero_grad(); loss = model(torch.randn(8, 4)).pow(2).mean(); loss.backward(); opt.step()
        mon.log(loss=loss)
        if step == 24:
            mon.flush()   # synchronous: committed when it returns
            print("FLUSHED", flush=True)
    """
)


def test_flushed_steps_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "FLUSHED"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run = gg.load(db)
    steps, values = run.metric("grad_norm")
    assert list(steps) == list(range(25))
    assert np.isfinite(values).all()
    assert len(run.scalar("loss")[0]) == 25


def test_bad_input_gets_one_clear_error(tmp_path: Path) -> None:
    model = mlp(depth=2)
    with pytest.raises(gg.GradguardError, match="nn.Module"):
        gg.watch([p for p in model.parameters()])  # type: ignore[arg-type]
    with pytest.raises(gg.GradguardError, match="torch.optim.Optimizer"):
        gg.watch(model, "sgd")  # type: ignore[arg-type]
    with pytest.raises(gg.GradguardError, match="no parameters"):
        gg.watch(nn.Sequential(nn.Tanh()))
    # a missing directory is made, as users expect of store="runs/exp.db" (issue 13, item 8)
    gg.watch(model, store=tmp_path / "missing" / "x.db").close()
    assert (tmp_path / "missing" / "x.db").is_file()
    with pytest.raises(gg.GradguardError, match="cannot be made"):
        gg.watch(model, store="/proc/no-such-dir/x.db")
    with pytest.raises(gg.GradguardError, match="writable directory"):
        gg.watch(model, store="/proc/gradguard-test.db")
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database " * 100)
    with pytest.raises(gg.GradguardError, match="not a gradguard store"):
        gg.load(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(gg.GradguardError, match="not a gradguard store"):
        gg.load(other)
    with pytest.raises(gg.GradguardError, match="not a gradguard store"):
        gg.watch(model, store=other)
    with pytest.raises(gg.GradguardError, match="no store at"):
        gg.load(tmp_path / "absent.db")
    with pytest.raises(gg.GradguardError, match="unknown watch option"):
        gg.watch(model, detial_every=3)
    empty = tmp_path / "empty.db"
    Store(empty).close()
    with pytest.raises(gg.GradguardError, match="holds no runs"):
        gg.load(empty)


def test_failing_store_is_reported_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def broken_write(self: Store, run_id: int, batch: object) -> None:
        calls["n"] += 1
        raise sqlite3.OperationalError("disk I/O error")

    mon = gg.watch(model, opt, store=tmp_path / "b.db", flush_every=2)
    monkeypatch.setattr(Store, "write", broken_write)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(mon, model, opt, 9)
        mon.close()
    store_warnings = [w for w in caught if "store" in str(w.message)]
    assert len(store_warnings) == 1, [str(w.message) for w in caught]
    assert calls["n"] == 1  # disabled after the first failure
    assert mon.step_count == 9
    assert list(mon.run.metric("grad_norm")[0]) == list(range(9))  # the in-memory run is complete


def test_failing_probe_is_disabled_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gg.watch(model, opt, detail_every=1)
    from gradguard.record.probes.activations import ActivationProbe

    monkeypatch.setattr(ActivationProbe, "_accumulate", lambda *a, **k: 1 / 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(mon, model, opt, 3)
        mon.close()
    assert sum("activations failed" in str(w.message) for w in caught) == 1
    assert list(mon.run.metric("grad_norm")[0]) == [0, 1, 2]
    strict = gg.watch(model, opt, detail_every=1, strict=True)
    with pytest.raises(gg.GradguardError, match="activations failed"):
        _train(strict, model, opt, 1)
    strict.close()


def _rows(mon: gg.Monitor) -> int:
    """The most rows any per-layer series keeps in the Monitor's memory."""
    return mon.run_log.memory_rows()


def test_memory_stays_bounded_with_a_store_and_run_reads_it_back(tmp_path: Path) -> None:
    torch.manual_seed(7)
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gg.watch(model, opt, store=tmp_path / "long.db", flush_every=5, diagnose_online=False)
    _train(mon, model, opt, 195)  # 39 flushes
    mon.run_log.sync()  # all committed (a loaded machine may lag), then one more flush prunes
    _train(mon, model, opt, 5)
    # diagnose_online=False: nothing but the last, uncommitted flush (of 5 steps) is kept
    assert _rows(mon) <= 5, _rows(mon)
    mon.flush(wait=False)  # the last loss (logged after the last automatic flush)
    live = mon.run  # read back from the store + the uncommitted tail
    mon.close()
    stored = gg.load(tmp_path / "long.db")
    for m in ("grad_norm", "weight_norm", "update_ratio", "act_std"):
        s_live, v_live = live.metric(m)
        s_db, v_db = stored.metric(m)
        np.testing.assert_array_equal(s_live, s_db)
        np.testing.assert_array_equal(v_live, v_db)
    assert live.metric("grad_norm")[0].tolist() == list(range(200))
    np.testing.assert_array_equal(live.scalar("loss")[1], stored.scalar("loss")[1])


def test_online_diagnosis_keeps_its_window_in_memory(tmp_path: Path) -> None:
    from gradguard.diagnosis.config import DiagnosisConfig

    cfg = DiagnosisConfig(start_steps=10, online_window=20)
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, store=tmp_path / "w.db", flush_every=5, diagnosis=cfg) as mon:
        _train(mon, model, opt, 195)
        mon.run_log.sync()
        _train(mon, model, opt, 5)
        # the first 10 and the last 20 rows, plus the last, uncommitted flush (of 5 steps)
        assert _rows(mon) <= 10 + 20 + 5, _rows(mon)
        tail = mon.run_log.tail(10, 20, mon.recorded_layers())
        s, _ = tail.metric("grad_norm")
        assert s[:10].tolist() == list(range(10)) and s[-20:].tolist() == list(range(180, 200))
    assert mon.run.metric("grad_norm")[0].tolist() == list(range(200))


def test_store_failing_midway_loses_nothing_in_mon_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp(depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    real_write = Store.write
    calls = {"n": 0}

    def fails_later(self: Store, run_id: int, batch: object) -> None:
        calls["n"] += 1
        if calls["n"] > 6:
            raise sqlite3.OperationalError("disk full")
        real_write(self, run_id, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "write", fails_later)
    mon = gg.watch(model, opt, store=tmp_path / "f.db", flush_every=5, diagnose_online=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(mon, model, opt, 20)
        mon.run_log.sync()  # 4 batches committed: the next flush drops them from memory
        _train(mon, model, opt, 80)
        mon.close()
    assert sum("disk full" in str(w.message) for w in caught) == 1
    assert mon.run_log.pruned  # older parts lived only in the store before it failed
    steps, gn = mon.run.metric("grad_norm")
    assert steps.tolist() == list(range(100))  # the store's 30 steps + memory's 70
    assert np.isfinite(gn).all()
    assert gg.load(tmp_path / "f.db").metric("grad_norm")[0].tolist() == list(range(30))
