"""The lab's building blocks: data, the MLP builder, recorded gradients, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradguard.errors import ConfigError
from gradguard.lab import run_experiment
from gradguard.lab._common import deterministic, linear_columns, mlp, record_gradients
from gradguard.lab.data import ADDING_BASELINE_MSE, adding_problem, digits


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
