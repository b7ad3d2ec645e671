"""The lab's building blocks: data, the MLP builder, recorded gradients, determinism."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gradguard as gg
from gradguard.errors import ConfigError, GradguardError, StoreError
from gradguard.lab import run_experiment
from gradguard.lab._common import deterministic, linear_columns, mlp, record_gradients
from gradguard.lab.data import ADDING_BASELINE_MSE, adding_problem, digits
from gradguard.record.batch import Batch
from gradguard.runs.run import Run
from gradguard.runs.store import Store, delete_runs, list_runs


def test_digits_split_is_fixed_and_standardised() -> None:
    a, b = digits(), digits()
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    mean, std = a.x_train.mean(0), a.x_train.std(0, unbiased=False)
    live = std > 0
    assert mean.abs().max() < 1e-5
    assert torch.allclose(std[live], torch.ones(int(live.sum())), atol=1e-4)
    assert set(a.y_train.tolist()) == set(range(10))


def test_adding_problem_targets_and_baseline() -> None:
    x, y = adding_problem(20000, 20, seed=3)
    assert x.shape == (20000, 20, 2) and y.shape == (20000, 1)
    marks = x[..., 1]
    assert torch.all(marks.sum(1) == 2)
    assert torch.all(marks[:, :10].sum(1) == 1)  # one mark in each half
    assert torch.allclose((x[..., 0] * marks).sum(1, keepdim=True), y)
    # predicting the mean gives MSE = Var(U + U') = 1/6
    assert float(((y - 1.0) ** 2).mean()) == pytest.approx(ADDING_BASELINE_MSE, rel=0.03)
    assert torch.equal(adding_problem(5, 10, seed=1)[0], adding_problem(5, 10, seed=1)[0])
    with pytest.raises(ConfigError, match="length"):
        adding_problem(5, 1)


def test_recorded_first_layer_gradient_matches_autograd() -> None:
    d = digits(torch.float64)
    x, y = d.x_train[:32], d.y_train[:32]
    with deterministic(0):
        model = mlp(5, width=16, activation="tanh", init="xavier", dtype=torch.float64)
    run = record_gradients(model, x, y, "t")
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = [
        float(torch.linalg.vector_norm(torch.cat([m.weight.grad.flatten(), m.bias.grad.flatten()])))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    got = run.metric("grad_norm")[1][0][linear_columns(run)]
    assert got == pytest.approx(expected, rel=1e-9)


def test_init_scales() -> None:
    for init, std in (
        ("small", 0.01),
        ("unit", 1.0),
        ("he", math.sqrt(2 / 256)),
        ("xavier", math.sqrt(2 / 512)),
    ):
        with deterministic(0):
            w = mlp(2, width=256, init=init)[1].linear.weight.detach()
        assert float(w.std()) == pytest.approx(std, rel=0.03), init
    with deterministic(0):
        w = mlp(2, width=256, sigma_w=2.0)[1].linear.weight.detach()
    assert float(w.std()) == pytest.approx(2.0 / 16, rel=0.03)
    with pytest.raises(ConfigError, match="init"):
        mlp(2, init="bogus")
    with pytest.raises(ConfigError, match="activation"):
        mlp(2, activation="swish9")


def test_residual_block_adds_its_input() -> None:
    with deterministic(0):
        model = mlp(3, width=8, activation="relu", residual=True)
    h = torch.randn(4, 8)
    block = model[1]
    assert torch.allclose(block(h), h + torch.relu(block.linear(h)))


def test_same_numbers_twice() -> None:
    a = run_experiment("exploding_training", quick=True, quiet=True, steps=30)
    b = run_experiment("exploding_training", quick=True, quiet=True, steps=30)
    assert a.table == b.table or _same_with_nan(a.table, b.table)
    for label in a.runs:
        la, lb = a.runs[label].scalar("loss")[1], b.runs[label].scalar("loss")[1]
        assert np.array_equal(la, lb, equal_nan=True)


def _same_with_nan(ra: list[dict[str, object]], rb: list[dict[str, object]]) -> bool:
    for x, y in zip(ra, rb):
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
                continue
            if u != v:
                return False
    return len(ra) == len(rb)


def test_unknown_experiment_and_option() -> None:
    with pytest.raises(ConfigError, match="unknown experiment"):
        run_experiment("nope")
    with pytest.raises(ConfigError, match="bad option"):
        run_experiment("weight_scale", no_such_option=1)


def _same_tables(a: Any, b: Any) -> None:
    """Exactly the same table (NaN equal to NaN) and the same recorded losses."""
    assert a.columns == b.columns
    assert len(a.table) == len(b.table)
    for x, y in zip(a.table, b.table):
        assert x.keys() == y.keys()
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u):
                assert math.isnan(v), k
            else:
                assert u == v, (k, u, v)
    assert a.curves == b.curves or _same_with_nan(
        [dict(enumerate(c["log10_mean"])) for c in a.curves.values()],
        [dict(enumerate(c["log10_mean"])) for c in b.curves.values()],
    )
    for label in a.runs:
        if a.runs[label].has_metric("grad_norm"):
            assert np.array_equal(
                a.runs[label].metric("grad_norm")[1],
                b.runs[label].metric("grad_norm")[1],
                equal_nan=True,
            ), label


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("weight_scale", {"activations": ["tanh", "relu"], "scales": [0.5, 2.0], "seeds": 2}),
        (
            "recurrent",
            {
                "grad_lengths": [10],
                "train_lengths": [5],
                "steps": 15,
                "explode_length": 10,
                "explode_steps": 10,
                "hidden": 8,
            },
        ),
        ("residual_depth", {"depths": [4], "steps": 15, "width": 16, "seeds": 2}),
        ("depth_sweep", {"activations": ["tanh"], "depths": [3], "inits": ["he"], "seeds": 2}),
    ],
)
def test_same_numbers_twice_more_experiments(name: str, options: dict[str, Any]) -> None:
    a = run_experiment(name, quick=True, quiet=True, **options)
    b = run_experiment(name, quick=True, quiet=True, **options)
    _same_tables(a, b)


def test_delete_runs_removes_only_the_named_runs(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    assert delete_runs(db, ["a"]) == 0  # no store yet: nothing to delete, nothing created
    assert not db.exists()
    for name, loss in (("a", 1.0), ("b", 2.0), ("a", 3.0)):
        run = Run.from_arrays(
            layers=["l1", "l2"],
            metrics={"grad_norm": ([0, 1], np.ones((2, 2)))},
            scalars={"loss": ([0, 1], [loss, loss])},
            name=name,
        )
        store = Store(db)
        run_id, _ = store.create_run(name)
        store.write(
            run_id,
            Batch(
                metrics={"grad_norm": run.metric("grad_norm")},
                scalars={"loss": run.scalar("loss")},
                layers=list(run.layers),
                events=[],
            ),
        )
        store.close()
    assert [n for n, _ in list_runs(db)] == ["a", "b", "a"]
    assert delete_runs(db, ["a", "nope"]) == 2
    assert [n for n, _ in list_runs(db)] == ["b"]
    assert gg.load(db, name="b").scalar("loss")[1].tolist() == [2.0, 2.0]
    with pytest.raises(StoreError, match="no run named 'a'"):
        gg.load(db, name="a")
    # nothing of the deleted runs is left behind in the other tables
    conn = sqlite3.connect(db)
    try:
        for table in ("layers", "metrics", "scalars", "events"):
            ids = {r[0] for r in conn.execute(f"SELECT DISTINCT run_id FROM {table}")}
            alive = {r[0] for r in conn.execute("SELECT id FROM runs")}
            assert ids <= alive, table
    finally:
        conn.close()


def test_rerun_into_the_same_dir_replaces_the_experiment_runs(tmp_path: Path) -> None:
    opts = {"activations": ["relu"], "scales": [0.5, 2.0]}
    first = run_experiment("weight_scale", quick=True, quiet=True, out=tmp_path, seeds=1, **opts)
    second = run_experiment("weight_scale", quick=True, quiet=True, out=tmp_path, seeds=2, **opts)
    names = [n for n, _ in list_runs(tmp_path / "runs.db")]
    assert sorted(names) == sorted(second.runs) == sorted(first.runs)  # once each, no NAME/ prefix
    # the report's hint `gradguard report runs.db --name LABEL` opens the latest run
    assert "--name LABEL" in (tmp_path / "report.html").read_text(encoding="utf-8")
    loaded = gg.load(tmp_path / "runs.db", name="relu/sigma_w=2")
    assert (
        loaded.metric("grad_norm")[1].shape[0] == 2
    )  # the second run's 2 seeds, not the first's 1
    run_experiment("weight_scale", quick=True, quiet=True, out=tmp_path, seeds=1, **opts)
    assert sorted(n for n, _ in list_runs(tmp_path / "runs.db")) == sorted(first.runs)


def test_unknown_list_options_name_the_valid_choices() -> None:
    with pytest.raises(GradguardError, match="unknown configs 'bogus'.*'baseline \\(sigmoid\\)'"):
        run_experiment("remedies", quiet=True, configs=["bogus"])
    with pytest.raises(GradguardError, match="unknown activations 'swish'.*'tanh'"):
        run_experiment("depth_sweep", quiet=True, activations=["tanh", "swish"])
    with pytest.raises(GradguardError, match="unknown inits 'orthogonal'.*'xavier'"):
        run_experiment("depth_sweep", quiet=True, inits=["orthogonal"])
    with pytest.raises(GradguardError, match="unknown activations 'softplus'"):
        run_experiment("weight_scale", quiet=True, activations=["softplus"])
    with pytest.raises(GradguardError, match="configs must be a list"):
        run_experiment("remedies", quiet=True, configs="relu")


def test_remedies_reading_uses_the_baseline_row_only_when_it_is_there() -> None:
    from gradguard.lab import remedies

    p = {"steps": 10, "depth": 5}

    def r(config: str, acc: float, ratio: float) -> dict[str, Any]:
        return {"config": config, "test_acc": acc, "grad_first_over_last": ratio}

    without = remedies._reading([r("relu + he", 0.6, 0.5), r("sigmoid + xavier", 0.11, 1e-9)], p)
    assert "baseline reaches" not in without and "not in this run" in without
    assert "relu + he 60%" in without and "sigmoid + xavier 11%" in without
    assert "best: relu + he at 60%" in without
    # the baseline is found by name, not by position
    rows = [r("relu + he", 0.6, 0.5), r("baseline (sigmoid)", 0.1, 1e-16)]
    text = remedies._reading(rows, p)
    assert "baseline reaches 10% test accuracy" in text and "1.0e-16" in text
    assert "Clearly better (> +30 points): relu + he" in text
    # a real run without the baseline
    res = run_experiment("remedies", quiet=True, configs=["relu + he"], steps=5, depth=3, width=8)
    assert [row["config"] for row in res.table] == ["relu + he"]
    assert "not in this run" in res.reading


def test_exploding_reading_follows_the_outcome() -> None:
    from gradguard.lab import exploding_training as ex

    def r(config: str, nan: int | None, acc: float) -> dict[str, Any]:
        return {"config": config, "first_nan_step": nan, "test_acc": acc, "max_loss": 2.5}

    p = {"lr": 0.5, "steps": 100}
    diverged = ex._reading([r("baseline (diverges)", 23, 0.09), r("norm clip 1.0", None, 0.7)], p)
    assert "the baseline diverges: its loss becomes NaN at step 23" in diverged
    finite = ex._reading([r("baseline (diverges)", None, 0.8), r("norm clip 1.0", None, 0.7)], p)
    assert "diverges:" not in finite and "NaN at step" not in finite
    assert "the baseline stays finite this time" in finite and "80%" in finite


def test_depth_sweep_keeps_the_spread_of_the_whole_curve() -> None:
    res = run_experiment(
        "depth_sweep",
        quiet=True,
        activations=["tanh", "relu"],
        depths=[3, 8, 30],
        inits=["small", "unit", "he"],
        seeds=3,
    )
    assert {"spread_decades", "spread_last_decades", "spread_max_decades"} <= set(res.columns)
    # one flow figure per init, at the deepest depth <= 20, vanishing and exploding inits included
    flows = sorted(f for f in res.figures if f.startswith("flow_"))
    assert flows == ["flow_depth8_he", "flow_depth8_small", "flow_depth8_unit"]
    for row in res.table:
        label = (
            f"{row['activation']}/"
            + {"N(0, 0.01²)": "small", "N(0, 1)": "unit", "He": "he"}[row["init"]]
            + f"/depth{row['depth']}"
        )
        run = res.runs[label]
        g = run.metric("grad_norm")[1][:, linear_columns(run)]  # (seeds, depth + 1)
        logs = np.log10(g)
        curve = res.curves[label]
        assert len(curve["log10_mean"]) == len(curve["log10_std"]) == row["depth"] + 1
        np.testing.assert_allclose(curve["log10_mean"], logs.mean(0), rtol=1e-12)
        np.testing.assert_allclose(curve["log10_std"], logs.std(0), rtol=1e-9, atol=1e-12)
        assert row["spread_decades"] == pytest.approx(logs[:, 0].std(), abs=1e-12)
        assert row["spread_last_decades"] == pytest.approx(logs[:, -2].std(), abs=1e-12)
        assert row["spread_max_decades"] == pytest.approx(logs[:, :-1].std(0).max(), abs=1e-12)
        assert row["spread_max_decades"] >= row["spread_decades"]
    # N(0, 0.01²) at depth 8 vanishes toward the input; N(0, 1) with ReLU explodes (every layer
    # decades above He's): the flows show both sides
    small = np.asarray(res.curves["relu/small/depth8"]["log10_mean"])
    unit = np.asarray(res.curves["relu/unit/depth8"]["log10_mean"])
    he = np.asarray(res.curves["relu/he/depth8"]["log10_mean"])
    assert small[0] < small[-2] - 3
    assert unit.min() > he.max() + 3


def test_curves_json_is_written_with_the_tables(tmp_path: Path) -> None:
    opts = {"activations": ["relu"], "depths": [2], "inits": ["he"], "seeds": 2}
    res = run_experiment("depth_sweep", quiet=True, out=tmp_path, **opts)
    data = json.loads((tmp_path / "depth_sweep" / "curves.json").read_text())
    assert data == res.curves


def test_residual_depth_last_hidden_is_not_the_head() -> None:
    res = run_experiment("residual_depth", quiet=True, depths=[4], steps=2, width=16, seeds=2)
    assert "grad_last_hidden_init" in res.columns and "grad_last_init" not in res.columns
    for row in res.table:
        run = res.runs[f"{row['arch']}/depth{row['depth']}/init"]
        g = run.metric("grad_norm")[1][:, linear_columns(run)]  # (seeds, 4 hidden + head)
        assert g.shape[1] == 5
        assert row["grad_last_hidden_init"] == pytest.approx(np.exp(np.log(g[:, 3]).mean()))
        assert row["grad_last_hidden_init"] != pytest.approx(np.exp(np.log(g[:, 4]).mean()))


def test_recurrent_draws_training_and_exploding_loss_curves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradguard.lab import recurrent

    drawn: dict[str, Any] = {}
    real = recurrent.line_plot

    def spy(series: Any, **kw: Any) -> bytes:
        drawn[kw.get("title", "")] = (series, kw)
        return real(series, **kw)

    monkeypatch.setattr(recurrent, "line_plot", spy)
    opts = {"grad_lengths": [5], "train_lengths": [5], "steps": 12, "explode_length": 10}
    res = run_experiment("recurrent", quiet=True, explode_steps=40, hidden=8, **opts)
    assert {"training_mse_T5", "exploding_rnn_loss"} <= set(res.figures)
    train = next(v for k, v in drawn.items() if k.startswith("training MSE"))
    assert sorted(train[0]) == ["gru", "lstm", "rnn"]
    assert train[1]["hline"] == pytest.approx(1 / 6)
    for kind, (_x, y) in train[0].items():
        assert len(y) == 12
        np.testing.assert_array_equal(y, res.runs[f"{kind}/T=5"].scalar("loss")[1])
    boom = next(v for k, v in drawn.items() if "spectral radius 2" in k)
    assert sorted(boom[0]) == ["rnn W_hh=2*orth", "rnn W_hh=2*orth + clip 1.0"]
    assert boom[1]["hline"] == pytest.approx(1 / 6)


def test_progress_bar_is_shown_on_an_injected_console() -> None:
    from rich.console import Console

    from gradguard import lab

    opts = {"activations": ["tanh"], "scales": [0.5, 2.0], "seeds": 1}
    buf = io.StringIO()
    with lab.progress_to(Console(file=buf, force_terminal=True, width=100)):
        run_experiment("weight_scale", **opts)
    shown = buf.getvalue()
    assert "weight scale" in shown and "100%" in shown and "━" in shown
    quiet = io.StringIO()
    with lab.progress_to(Console(file=quiet, force_terminal=True, width=100)):
        run_experiment("weight_scale", quiet=True, **opts)
    assert quiet.getvalue() == ""
