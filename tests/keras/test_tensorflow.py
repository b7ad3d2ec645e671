"""gradguard.keras on the TensorFlow backend (in a subprocess: see tests/keras/_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.keras._backend import assert_gradients_match, case, run_cases
from tests.keras.common import (
    check_check,
    check_custom_loop,
    check_detail,
    check_errors,
    check_failure_isolated,
    check_host_reads,
    check_lab,
    check_store,
)

BACKEND = "tensorflow"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_cases(
        BACKEND,
        Path(tmp_path_factory.mktemp(BACKEND)),
        "gradients",
        "gradients_jit",
        "host_reads",
        "store",
        "detail",
        "errors",
        "check",
        "custom_loop",
        "failure_isolated",
        "lab",
        "branched_update",
    )


def test_grad_norms_equal_gradient_tape(result: dict[str, Any]) -> None:
    models = case(result, "gradients")
    assert set(models) == {"dense", "cnn", "lstm", "residual", "batchnorm"}
    assert_gradients_match(models)
    # the LSTM's cell weights count as the LSTM layer; BatchNormalization is its own layer
    assert models["lstm"]["kinds"] == ["LSTM", "Dense"]
    assert models["batchnorm"]["kinds"] == ["Dense", "BatchNormalization", "Dense"]


def test_grad_norms_under_jit_compile(result: dict[str, Any]) -> None:
    assert_gradients_match(case(result, "gradients_jit"))


def test_no_host_read_per_step(result: dict[str, Any]) -> None:
    check_host_reads(case(result, "host_reads"))


def test_store(result: dict[str, Any]) -> None:
    check_store(case(result, "store"), BACKEND)


def test_weight_norm_and_update_ratio_on_detail_steps(result: dict[str, Any]) -> None:
    check_detail(case(result, "detail"))


def test_bad_input(result: dict[str, Any]) -> None:
    check_errors(case(result, "errors"))


def test_check_at_init(result: dict[str, Any]) -> None:
    """gg.keras.check: verdicts of the three stacks, weights untouched, dL/dh against the
    backend's autodiff on the tail of the stack."""
    check_check(case(result, "check"))


def test_lab_depth_sweep_agrees_with_torch(result: dict[str, Any]) -> None:
    """`gradguard lab depth_sweep --framework keras` against the torch sweep of the same nets:
    per configuration, log10 of the first layer's gradient (geometric mean over seeds) agrees
    within 3 standard errors of the difference (spreads over seeds from both runs) + 0.02."""
    check_lab(case(result, "lab"))


def test_custom_loop_watch(result: dict[str, Any]) -> None:
    check_custom_loop(case(result, "custom_loop"))


def test_a_failing_part_leaves_the_training_alone(result: dict[str, Any]) -> None:
    check_failure_isolated(case(result, "failure_isolated"))


def test_update_inside_the_detail_conditional(result: dict[str, Any]) -> None:
    """SGD's update norm on the detail steps is lr x the gradient norm, with the update run
    inside the detail-step conditional (tf.function and XLA, optimizer built on first apply)."""
    got = case(result, "branched_update")
    for mode in ("graph", "xla"):
        r = got[mode]
        assert r["failures"] == {}
        assert r["weight_steps"] == [0, 2]
        for u, g in zip(r["update_norm"], r["lr_grad_norm"]):
            assert u == pytest.approx(g, rel=1e-5)
        assert r["weight_norm_0"] == pytest.approx(r["ref_weight_norm_0"], rel=1e-6)
