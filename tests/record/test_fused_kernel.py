"""The gradient-statistics kernel: eager, compiled, and the measured choice between them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.errors import ConfigError
from gradguard.record.fused import KERNEL_EVENT, StatsKernel
from gradguard.record.kernels import sumsq_max_abs


def _grads() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(64, 32, generator=g), torch.randn(32, generator=g) * 1e3]


def test_auto_on_cpu_stays_eager_without_compiling() -> None:
    k = StatsKernel("auto")
    assert k.decide(_grads()) is None
    assert k.decided and k.name == "eager" and k._compiled is None


def test_compiled_and_measured_choice_agree_with_the_eager_numbers() -> None:
    grads = _grads()
    want_sq, want_max = sumsq_max_abs(grads)
    k = StatsKernel("compiled")
    sq, mx = k(grads)  # compiles on first use
    assert k.name == "compiled"
    np.testing.assert_allclose(sq.numpy(), want_sq.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(mx.numpy(), want_max.numpy())
    # a NaN makes max |g| NaN on the compiled path too
    bad = [grads[0].clone(), grads[1]]
    bad[0][3, 3] = math.nan
    assert math.isnan(float(k(bad)[1][0])) and not math.isnan(float(k(bad)[1][1]))
    # the measured choice: both paths timed on the same gradients, the faster kept
    auto = StatsKernel("auto", measure_on_cpu=True)
    got = auto.decide(grads)
    assert got is not None and got["kernel"] in ("eager", "compiled")
    assert set(got["seconds"]) == {"eager", "compiled"}
    assert got["kernel"] == min(got["seconds"], key=got["seconds"].get) == auto.name
    np.testing.assert_allclose(auto(grads)[0].numpy(), want_sq.numpy(), rtol=1e-6)
    assert auto.decide(grads) is None  # once


def test_watch_records_the_kernel_choice_and_bad_modes_fail() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, stats_kernel="eager") as mon:
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    assert not [e for e in mon.run.events if e.kind == KERNEL_EVENT]
    with pytest.raises(ConfigError, match="stats_kernel"):
        gg.watch(model, opt, stats_kernel="fast")
