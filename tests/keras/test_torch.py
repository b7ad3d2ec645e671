"""gradguard.keras on the PyTorch backend (in a subprocess: see tests/keras/_backend.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.keras._backend import assert_gradients_match, case, run_cases
from tests.keras.common import (
    check_custom_loop,
    check_detail,
    check_host_reads,
    check_store,
)

BACKEND = "torch"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # the cheap cases only (the issue: "and torch if cheap"): about 2 min
    return run_cases(
        BACKEND,
        Path(tmp_path_factory.mktemp(BACKEND)),
        "gradients",
        "host_reads",
        "store",
        "detail",
        "custom_loop",
    )


def test_grad_norms_equal_torch_autograd(result: dict[str, Any]) -> None:
    models = case(result, "gradients")
    assert set(models) == {"dense", "cnn", "lstm", "residual", "batchnorm"}
    assert_gradients_match(models)
    # the LSTM's cell weights count as the LSTM layer; BatchNormalization is its own layer
    assert models["lstm"]["kinds"] == ["LSTM", "Dense"]
    assert models["batchnorm"]["kinds"] == ["Dense", "BatchNormalization", "Dense"]


def test_no_host_read_per_step(result: dict[str, Any]) -> None:
    check_host_reads(case(result, "host_reads"))


def test_store(result: dict[str, Any]) -> None:
    check_store(case(result, "store"), BACKEND)


def test_weight_norm_and_update_ratio_on_detail_steps(result: dict[str, Any]) -> None:
    check_detail(case(result, "detail"))


def test_custom_loop_watch(result: dict[str, Any]) -> None:
    check_custom_loop(case(result, "custom_loop"))
