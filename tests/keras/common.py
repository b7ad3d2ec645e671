"""Assertions shared by the backends' test modules."""

from __future__ import annotations

import sqlite3
from typing import Any

from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_STD,
    GRAD_NORM,
    LAYER_METRICS,
    LOSS,
    LR,
    UPDATE_RATIO,
)


def check_host_reads(reads: dict[str, Any]) -> None:
    """4 and 32 steps, one flush each: the same few reads (count, rows, scalars, steps)."""
    assert reads["4"]["steps"] == 4 and reads["32"]["steps"] == 32
    assert reads["4"]["reads"] == reads["32"]["reads"]
    assert reads["32"]["reads"] <= 10  # one or two flushes (epoch end, train end) of <= 5 reads


def check_store(store: dict[str, Any], backend: str) -> None:
    assert store["runs"] == ["run-1", "run-2"]
    # every per-layer metric, dL/dh included (the model has a compiled loss)
    assert set(store["metrics"]) == set(LAYER_METRICS)
    assert ACT_GRAD_NORM in store["metrics"]
    assert {LOSS, LR} <= set(store["scalars"])
    # the second fit continues the optimizer's step count: 128 / 16 * 2 epochs = 16 steps before
    assert store["steps"] == list(range(16, 24))
    assert store["update_steps"] == [16, 18, 20, 22]  # detail_every=2
    assert store["update_finite"]
    assert store["config"] == {"framework": "keras", "keras_backend": backend, "optimizer": "SGD"}
    kinds = [lay[1] for lay in store["layers"]]
    assert kinds == ["Dense", "Dense", "Dense"]
    assert [lay[2] for lay in store["layers"]] == store["numel"]
    assert [lay[3] for lay in store["layers"]] == ["Tanh", "ReLU", None]
    with sqlite3.connect(store["path"]) as conn:  # the PyTorch schema: one blob per (metric, step)
        n = conn.execute(
            "SELECT count(*) FROM metrics WHERE metric = ? AND run_id = 1", (UPDATE_RATIO,)
        ).fetchone()[0]
    assert n == 8  # run 1: 16 steps, every second one


def check_errors(errors: dict[str, str]) -> None:
    assert (
        errors["not_compiled"].startswith("ConfigError")
        and "model.compile" in errors["not_compiled"]
    )
    assert "keras.Model" in errors["not_a_model"] and "gg.watch" in errors["not_a_model"]
    assert "flush_every must be an int >= 1, got 0" in errors["flush_every"]
    assert "no trainable weights" in errors["no_weights"]
    assert "failed on the example batch" in errors["check_bad_batch"]
    assert "pass y=" in errors["check_loss_without_y"]


def check_diagnosis(diag: dict[str, Any]) -> None:
    def top(name: str) -> tuple[str, str]:
        return tuple(diag[name]["findings"][0])  # type: ignore[return-value]

    assert top("sigmoid20") == ("vanishing_gradients", "critical")
    # the evidence is dL/dh (act_grad_norm), as in a PyTorch run, and it falls toward the input
    assert diag["sigmoid20"]["signal"] == ACT_GRAD_NORM
    agn = diag["sigmoid20"]["agn_last"]
    assert len(agn) == 21 and all(v > 0 for v in agn)
    assert agn[0] < 1e-3 * agn[19]
    assert sum(a < b for a, b in zip(agn[:19], agn[1:20])) >= 17  # rises layer by layer
    assert top("normal1_relu") == ("exploding_gradients", "critical")
    assert diag["normal1_relu"]["signal"] == ACT_GRAD_NORM  # dL/dh grows toward the input
    assert [k for k, _ in diag["he_relu"]["findings"]] == ["healthy"]
    sigmoid_fix = diag["sigmoid20"]["remedies"][0]
    assert sigmoid_fix.startswith('activation="relu"') and "nn." not in sigmoid_fix
    assert any('kernel_initializer="he_normal"' in r for r in diag["normal1_relu"]["remedies"])
    assert not any("nn." in r or "torch" in r for r in diag["normal1_relu"]["remedies"])
    # online, during fit: the sigmoid stack's vanishing gradients are found at a flush and
    # warned about once; the He-initialised stack gets no vanishing or exploding finding
    online = [kind for kind, _ in diag["sigmoid20"]["online"]]
    assert "finding:vanishing_gradients" in online
    assert online.count("finding:vanishing_gradients") <= 2  # once, again only if it worsens
    assert any("vanishing_gradients" in w for w in diag["sigmoid20"]["online_warnings"])
    he = [kind for kind, _ in diag["he_relu"]["online"]]
    assert not {"finding:vanishing_gradients", "finding:exploding_gradients"} & set(he)
    assert diag["cli"]["code"] == 0
    assert "vanishing gradients" in diag["cli"]["text"] and "keras.layers" in diag["cli"]["text"]


def check_check(chk: dict[str, Any]) -> None:
    import pytest

    assert chk["sigmoid20"]["verdict"] == "vanishing"
    assert chk["sigmoid20"]["remedy"].startswith('activation="relu"')
    assert chk["normal1_relu"]["verdict"] == "exploding"
    # He ReLU: the gradient neither vanishes nor explodes (digits' non-negative pixels make some
    # deep units look dead on one batch, which the check may report as "dead units")
    assert chk["he_relu"]["verdict"] in ("healthy", "dead units")
    assert 0.1 < chk["he_relu"]["grad_ratio"] < 10
    assert all(chk[k]["unchanged"] for k in ("sigmoid20", "normal1_relu", "he_relu"))
    assert "act_grad" in chk["he_relu"]["table"]
    assert chk["dl_dh"]["got"] == pytest.approx(chk["dl_dh"]["ref"], rel=1e-5)


def check_lab(lab: dict[str, Any]) -> None:
    import math

    assert lab["code"] == 0
    torch_rows, keras_rows = lab["torch"], lab["keras"]
    assert len(torch_rows) == len(keras_rows) == 3 * 2 * 4
    seeds = 4
    for t, k in zip(torch_rows, keras_rows):
        key = (t["activation"], t["init"], int(t["depth"]))
        assert key == (k["activation"], k["init"], int(k["depth"]))
        kt, kk = math.log10(float(t["grad_first"])), math.log10(float(k["grad_first"]))
        se = math.sqrt((float(t["spread_decades"]) ** 2 + float(k["spread_decades"]) ** 2) / seeds)
        assert abs(kk - kt) <= 3 * se + 0.02, (key, kt, kk, se)
    # the sweep spans decades: sigmoid + N(0, 0.01^2) vanishes far below ReLU + N(0, 1)
    by = {(r["activation"], r["init"], int(r["depth"])): float(r["grad_first"]) for r in keras_rows}
    assert by[("sigmoid", "N(0, 0.01²)", 10)] < 1e-15 < 1e3 < by[("relu", "N(0, 1)", 10)]


def check_custom_loop(loop: dict[str, Any]) -> None:
    """gg.keras.watch on a hand-written step: reference norms and loss, two flushes of 5 reads
    before close (steps 5 and 10), monitor removed from the optimizer after close."""
    import pytest

    assert not loop["failures"]
    assert loop["steps"] == list(range(12))
    assert set(loop["got"]) == set(loop["ref"])
    for layer, ref in loop["ref"].items():
        assert loop["got"][layer] == pytest.approx(ref, rel=1e-5), layer
    assert loop["loss"] == pytest.approx(loop["ref_loss"], rel=1e-5)
    assert loop["reads_before_close"] == 10
    # mon.record_batch(x, y) inside the step: dL/dh of every step (detail_every=1), step 0
    # against the backend's autodiff at the weights before the update
    assert loop["agn_steps"] == list(range(12))
    for layer, ref in loop["ref_agn"].items():
        assert loop["agn"][layer] == pytest.approx(ref, rel=1e-5), layer
    # no compiled loss: no dL/dh, and the run's config says why
    assert loop["plain_config_agn"] == "not recorded (no compiled loss)"
    # and no activation statistics: the ring's unwritten rows are NaN (they once read as zeros)
    assert GRAD_NORM in loop["plain_metrics"]
    assert not {ACT_STD, ACT_GRAD_NORM} & set(loop["plain_metrics"])
    assert loop["unwrapped"]


def check_failure_isolated(iso: dict[str, Any]) -> None:
    """A failing statistics kernel leaves the training alone and is reported once."""
    import math

    assert iso["moved"] and all(math.isfinite(v) for v in iso["loss"])
    assert list(iso["failures"]) == ["gradient statistics"]
    assert "injected failure" in iso["failures"]["gradient statistics"]
    assert len(iso["warnings"]) == 1 and "switched off" in iso["warnings"][0]
    # a failing dL/dh: reported once, the activation statistics go on without it
    part = f"dL/dh ({ACT_GRAD_NORM})"  # gradguard.keras._activations.GRAD_PART (no keras here)
    assert list(iso["agn_failures"]) == [part]
    assert len(iso["agn_warnings"]) == 1 and part in iso["agn_warnings"][0]
    assert ACT_STD in iso["agn_metrics"] and ACT_GRAD_NORM not in iso["agn_metrics"]


def check_detail(detail: dict[str, Any]) -> None:
    """Weight norm and update ratio on the detail steps only, equal to numpy on the weights."""
    import pytest

    assert detail["steps"] == [0, 1, 2, 3]
    assert detail["weight_steps"] == detail["update_steps"] == [0, 3]
    for got, ref in zip(detail["weight_norm"], detail["ref_weight_norm"]):
        assert got == pytest.approx(ref, rel=1e-5)
    for got, ref in zip(detail["update_ratio"], detail["ref_update_ratio"]):
        assert got == pytest.approx(ref, rel=1e-4)
    assert min(min(r) for r in detail["ref_update_ratio"]) > 1e-4  # the weights did move
