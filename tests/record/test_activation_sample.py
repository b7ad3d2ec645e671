"""Activation statistics from a fixed random subset of rows (``activation_sample``) on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.errors import ConfigError


def _run(sample: int | None, batch: int, seed: int = 0) -> tuple[gg.Monitor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(batch, 32)
    with gg.watch(model, opt, detail_every=1, activation_sample=sample) as mon:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return mon, model[1](model[0](x)).detach()


def test_small_outputs_are_read_in_full() -> None:
    # 64 x 512 elements < 4 x 32768: every element, the exact numbers
    mon, h = _run(32768, 64)
    _, zero = mon.run.metric("act_zero_frac")
    _, mean = mon.run.metric("act_mean")
    assert zero[0, 0] == pytest.approx(float((h == 0).double().mean()), abs=1e-12)
    assert mean[0, 0] == pytest.approx(float(h.double().mean()), rel=1e-6)


def test_large_outputs_are_estimated_from_a_subset_within_its_sampling_error() -> None:
    batch, sample = 2048, 32768
    mon, h = _run(sample, batch)
    exact, _ = _run(None, batch)
    full_zero = float((h == 0).double().mean())
    assert exact.run.metric("act_zero_frac")[1][0, 0] == pytest.approx(full_zero, abs=1e-12)
    got = mon.run.metric("act_zero_frac")[1][0, 0]
    # sampling error of a mean over k = 64 rows drawn from the batch: sd of the per-row means
    rows = sample // 512
    se = float((h == 0).double().mean(1).std()) / np.sqrt(rows) * np.sqrt(1 - rows / batch)
    assert got != full_zero  # really a subset
    assert abs(got - full_zero) < 4 * se
    got_mean = mon.run.metric("act_mean")[1][0, 0]
    se_mean = float(h.double().mean(1).std()) / np.sqrt(rows)
    assert abs(got_mean - float(h.double().mean())) < 4 * se_mean
    # the backpropagated signal is always exact
    np.testing.assert_allclose(
        mon.run.metric("act_grad_norm")[1], exact.run.metric("act_grad_norm")[1], rtol=1e-6
    )


def test_the_subset_is_fixed_across_steps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 512), nn.Tanh(), nn.Linear(512, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the same weights and input each step
    x = torch.randn(1024, 32)
    with gg.watch(model, opt, detail_every=1) as mon:
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    std = mon.run.metric("act_std")[1][:, 0]
    assert std[0] == std[1] == std[2]
    full = float(torch.tanh(model[0](x)).detach().double().std(correction=0))
    assert std[0] != pytest.approx(full, rel=1e-6)  # a subset, not every element
    assert std[0] == pytest.approx(full, rel=0.05)


def test_the_subset_leaves_the_run_rng_alone() -> None:
    draws = []
    for sample in (32768, None):
        _run(sample, 1024, seed=3)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("bad", [0, -1, 2.5, "all"])
def test_bad_activation_sample_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="activation_sample"):
        gg.watch(nn.Linear(2, 2), activation_sample=bad)
