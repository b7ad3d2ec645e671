"""gg.fix: untrainable nets become trainable (checked by training them), trainable ones are left
alone, architecture changes happen on a copy, and a failure restores the model exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
import gradguard.remedies.fix as fixmod
from gradguard.errors import GradguardError
from gradguard.lab.data import digits
from gradguard.remedies.fix import Skip, _add_skips_, _insert_norm_, _swap_saturating_


def mlp(depth: int, act: type[nn.Module], sw2: float | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(64 if i == 0 else 32, 32)
        if sw2 is not None:
            nn.init.normal_(lin.weight, 0.0, math.sqrt(sw2 / lin.in_features))
            nn.init.zeros_(lin.bias)
        mods += [lin, act()]
    return nn.Sequential(*mods, nn.Linear(32, 10))


@pytest.fixture(scope="module")
def data():
    return digits()


def accuracy_after_training(model: nn.Module, data, steps: int = 200) -> float:
    """Adam, lr 1e-3, batch 64: the harness's middle learning rate (benchmarks/trainability.py)."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(data.x_train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).double().mean())


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fix_makes_an_exploding_relu_net_train(data) -> None:
    model = mlp(4, nn.ReLU, sw2=16.0)
    assert accuracy_after_training(mlp(4, nn.ReLU, sw2=16.0), data) < 0.9  # the reference fails
    report = gg.fix(model, data.x_train[:64])
    assert report.before.trainable is False
    assert report.fixed and report.changed and report.model is model  # in place
    assert not report.needs_architecture_change
    assert report.after.trainable is True
    assert accuracy_after_training(model, data) >= 0.9


def test_fix_leaves_a_trainable_net_alone(data) -> None:
    model = mlp(4, nn.ReLU, sw2=2.0)
    before = state(model)
    report = gg.fix(model, data.x_train[:64])
    assert report.changed == "" and report.fixed and report.tried == ()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fix_keeps_the_rng_streams(data) -> None:
    model = mlp(12, nn.Tanh, sw2=16.0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    report = gg.fix(model, data.x_train[:64])
    assert report.tried  # it drew new weights
    assert torch.equal(torch.rand(3), expected)


def test_report_renders_before_after(data, tmp_path) -> None:
    report = gg.fix(mlp(12, nn.Tanh, sw2=16.0), data.x_train[:64])
    text = str(report)
    assert "before:" in text and "after:" in text and "->" in text
    assert "tried" in text
    page = report.to_html()
    assert page.startswith("<!doctype html>") and "Remedies tried" in page
    d = report.to_dict()
    assert d["changed"] == report.changed and len(d["tried"]) == len(report.tried)


def test_failure_restores_weights_buffers_modes_flags_and_rng(data, monkeypatch) -> None:
    model = mlp(4, nn.ReLU, sw2=16.0)  # untrainable, and an init fixes it
    model.register_buffer("seen", torch.arange(3.0))
    model.train()
    model[1].eval()  # a mixed mode must come back mixed
    model[0].bias.requires_grad_(False)
    before = state(model)
    real_check = fixmod.check
    seen = {"model": 0}

    def failing_check(m, *args, **kwargs):
        if m is model:
            seen["model"] += 1
            if seen["model"] == 2:  # the re-check after the winner was copied in
                raise RuntimeError("device lost")
        return real_check(m, *args, **kwargs)

    monkeypatch.setattr(fixmod, "check", failing_check)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with pytest.raises(GradguardError, match="restored"):
        gg.fix(model, data.x_train[:64])
    assert seen["model"] == 2  # it failed after changing the model
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and not model[1].training and model[2].training
    assert torch.equal(model.seen, torch.arange(3.0))
    assert model[0].bias.requires_grad is False and model[0].weight.requires_grad
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1]) and random.getstate() == rng[2]


def test_architecture_changes_happen_on_a_copy(data) -> None:
    model = mlp(12, nn.Sigmoid)
    copy_ = mlp(12, nn.Sigmoid)
    assert _swap_saturating_(copy_) == 12
    assert not any(isinstance(m, nn.Sigmoid) for m in copy_.modules())
    assert _insert_norm_(copy_, data.x_train[:8]) == 12
    norms = [m for m in copy_.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 12 and all(n.normalized_shape == (32,) for n in norms)
    before = state(model)
    report = gg.fix(model, data.x_train[:64], allow_architecture_changes=True)
    assert report.needs_architecture_change
    assert report.changed in {"relu", "norm", "relu+norm", "residual", "relu+residual"}
    assert report.model is not model
    assert report.after.trainability.probability > report.before.trainability.probability
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original is untouched
    assert accuracy_after_training(report.model, data) > accuracy_after_training(model, data) + 0.2


def test_skips_wrap_shape_preserving_pairs_only(data) -> None:
    model = mlp(5, nn.Tanh)  # Linear(64, 32) keeps no shape; the four Linear(32, 32) do
    reference = mlp(5, nn.Tanh)
    assert _add_skips_(model) == 4
    skips = [m for m in model.modules() if isinstance(m, Skip)]
    assert len(skips) == 4 and all(s.scale == pytest.approx(0.25) for s in skips)
    x = data.x_train[:8]
    h = torch.tanh(reference[0](x))
    for i in range(1, 5):  # x + tanh(W x + b) / 4, by hand
        lin = reference[2 * i]
        h = h + 0.25 * torch.tanh(lin(h))
    expected = reference[10](h)
    assert torch.allclose(model(x), expected, atol=1e-6)
    with pytest.raises(GradguardError, match="shape-preserving"):
        _add_skips_(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))


def mean_cosine(h: torch.Tensor) -> float:
    """Mean cosine between the rows of h (batch, features), the diagonal left out."""
    u = h / h.norm(dim=1, keepdim=True)
    return float((u @ u.T)[~torch.eye(len(h), dtype=torch.bool)].mean())


def test_skips_keep_a_deep_relu_stack_from_collapsing(data) -> None:
    # Regression: at 1/sqrt(L) the 47 ReLU branch means added up to an offset that made every
    # digit look the same at the head (mean cosine 0.998), and SGD stalled at 0.84 test accuracy.
    x = data.x_train[:64]
    model = mlp(48, nn.ReLU)
    gg.init_(model, "he", data=x)
    assert _add_skips_(model) == 47
    with torch.no_grad():
        assert mean_cosine(model[:-1](x)) < 0.85  # the head's inputs: 0.68 at 1/L


@pytest.mark.parametrize(
    ("model", "inp", "match"),
    [
        (nn.Sequential(nn.ReLU()), torch.randn(4, 3), "no parameters|parameter"),
        (nn.Linear(5, 2), torch.randn(4, 3), "failed on the example input"),
        ("not a model", torch.randn(4, 3), "nn.Module"),
    ],
)
def test_bad_input_is_one_clear_error(model, inp, match) -> None:
    with pytest.raises(GradguardError, match=match):
        gg.fix(model, inp)


def test_loss_that_is_not_a_scalar_is_refused() -> None:
    model = nn.Linear(3, 2)
    before = state(model)
    with pytest.raises(GradguardError, match="scalar"):
        gg.fix(model, torch.randn(4, 3), loss_fn=lambda out: out)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
