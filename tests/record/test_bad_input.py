"""Bad input to the Python API is a GradguardError naming the value and the fix (issue 13, item 7)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import gradguard as gg
from gradguard.errors import ConfigError, GradguardError, StoreError
from gradguard.metrics import GRAD_NORM, LOSS
from gradguard.runs.store import Store, delete_runs
from tests.fixtures.models import mlp


def model_and_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = mlp(depth=2, width=4, d_in=3, d_out=1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_optimizer_of_another_model_is_refused() -> None:
    model, _ = model_and_opt()
    _, other = model_and_opt()
    with pytest.raises(GradguardError, match="none of the model's parameters"):
        gg.watch(model, other)
    with pytest.raises(GradguardError, match="none of the model's parameters"):
        gg.Guard(model, other)
    assert not model._forward_pre_hooks  # nothing was left on the model


def test_an_optimizer_holding_part_of_the_model_is_fine() -> None:
    model, _ = model_and_opt()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)  # fine-tuning one layer
    with gg.watch(model, opt) as mon:
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
    assert mon.step_count == 1


@pytest.mark.parametrize("store", [123, 1.5, True, ["a.db"]])
def test_store_that_is_not_a_path(store: object) -> None:
    model, opt = model_and_opt()
    with pytest.raises(StoreError, match="must be a file path"):
        gg.watch(model, opt, store=store)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", [None, 3, b"x.db"])
def test_load_of_something_that_is_not_a_path(path: object) -> None:
    with pytest.raises(StoreError, match="must be a file path"):
        gg.load(path)  # type: ignore[arg-type]


@pytest.mark.parametrize("on_finding", [3, "print", True])
def test_on_finding_must_be_callable(on_finding: object) -> None:
    model, opt = model_and_opt()
    with pytest.raises(ConfigError, match="on_finding must be a function"):
        gg.watch(model, opt, on_finding=on_finding)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["detail_every", "record_every"])
@pytest.mark.parametrize("value", [0, -3])
def test_schedule_period_below_one_is_an_error_not_never(option: str, value: int) -> None:
    model, opt = model_and_opt()
    with pytest.raises(ConfigError, match="pass None"):
        gg.watch(model, opt, **{option: value})


@pytest.mark.parametrize("flag", ["rollback", "locate"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_guard_flags_must_be_bools(flag: str, value: object) -> None:
    model, opt = model_and_opt()
    with pytest.raises(ConfigError, match=f"{flag} must be True or False"):
        gg.Guard(model, opt, **{flag: value})  # type: ignore[arg-type]


def test_metric_name_typo_is_an_error_naming_the_real_ones() -> None:
    run = gg.Run.from_arrays(
        layers=["a"], metrics={GRAD_NORM: ([0], [[1.0]])}, scalars={"acc": ([0], [0.5])}
    )
    with pytest.raises(ConfigError, match="did you mean 'grad_norm'"):
        run.metric("grad_nrom")
    with pytest.raises(ConfigError, match="did you mean 'acc'"):
        run.scalar("acc2")
    # a declared metric that was not recorded is empty (rules ask freely), a recorded one is there
    assert run.scalar(LOSS)[0].shape == (0,)
    assert run.metric("act_mean")[1].shape == (0, 1)
    assert run.scalar("acc")[1].tolist() == [0.5]


def test_unnamed_runs_created_at_the_same_moment_get_different_names(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    stores = [Store(path) for _ in range(6)]  # one connection each, as separate processes have
    barrier = threading.Barrier(len(stores))
    names: list[str] = []

    def create(store: Store) -> None:
        barrier.wait()
        names.append(store.create_run(None)[1])

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(names) == [f"run-{i}" for i in range(1, 7)]
    for s in stores:
        s.close()


def test_a_deleted_run_leaves_no_duplicate_name(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)
    store.create_run(None)
    store.create_run(None)
    store.close()
    delete_runs(path, ["run-1"])
    store = Store(path)
    assert store.create_run(None)[1] == "run-3"  # count + 1 = 2 is still taken
    store.close()


def test_store_with_its_layer_rows_deleted_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    model, opt = model_and_opt()
    with gg.watch(model, opt, store=path):
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
    with sqlite3.connect(path) as c:
        c.execute("DELETE FROM layers")
    with pytest.raises(StoreError, match="damaged: its layer table has 0 rows"):
        gg.load(path)


def test_loaded_run_with_intact_layers_still_reads(tmp_path: Path) -> None:
    """The damage check reads what it should: an intact store loads with its numbers."""
    path = tmp_path / "s.db"
    model, opt = model_and_opt()
    with gg.watch(model, opt, store=path):
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
    run = gg.load(path)
    assert np.isfinite(run.metric(GRAD_NORM)[1]).all()
