"""gg.check: verdicts on textbook models, numbers against autograd, and the model left untouched."""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.errors import GradguardError


def mlp(depth, width, act, *, std=None, sw2=None, bias=0.0, d_in=None, d_out=10, bn=False):
    """depth x (Linear -> [BatchNorm] -> act), then a Linear head; weights N(0, std^2) or N(0, sw2/fan_in)."""
    mods: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(d_in if (i == 0 and d_in) else width, width)
        s = std if std is not None else math.sqrt(sw2 / lin.in_features)
        nn.init.normal_(lin.weight, 0.0, s)
        nn.init.constant_(lin.bias, bias)
        mods += [lin, *( [nn.BatchNorm1d(width)] if bn else []), act()]  # fmt: skip
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- verdicts ----------------------------------------------------------------------------------


def test_deep_sigmoid_with_tiny_weights_vanishes():
    model = mlp(50, 64, nn.Sigmoid, std=0.01)
    report = gg.check(model, torch.randn(16, 64))
    assert report.verdict == "vanishing"
    assert report.findings[0].kind == "vanishing_gradients"
    assert report.findings[0].severity == gg.Severity.CRITICAL
    assert report.grad_ratio < 1e-4
    assert report.findings[0].remedies  # comes with something to try


def test_tanh_with_sigma_w2_4_explodes():
    model = mlp(50, 128, nn.Tanh, sw2=4.0)
    report = gg.check(model, torch.randn(16, 128))
    assert report.verdict == "exploding"
    assert report.grad_ratio > 1e2
    # mean field: chi_1 = 1.36 at sigma_w^2 = 4, sigma_b^2 = 0 -> per-layer gain sqrt(chi_1) = 1.167
    assert report.backward_gain == pytest.approx(
        math.sqrt(gg.theory.chi1("tanh", 4.0, 0.0)), rel=0.05
    )


def test_he_initialised_relu_is_healthy():
    model = mlp(20, 128, nn.ReLU, sw2=2.0)
    report = gg.check(model, torch.randn(32, 128))
    assert report.verdict == "healthy", str(report)
    assert [f.kind for f in report.findings] == ["healthy"]
    assert 0.2 < report.grad_ratio < 5


def test_saturating_sigmoid():
    model = mlp(6, 64, nn.Sigmoid, sw2=400.0)
    report = gg.check(model, torch.randn(32, 64))
    kinds = [f.kind for f in report.findings]
    assert "saturation" in kinds
    sat = [r.sat_frac for r in report.layers if r.activation == "Sigmoid"]
    assert min(sat) > 0.5


def test_dead_relu_units():
    model = mlp(8, 64, nn.ReLU, sw2=2.0, bias=-3.0)
    report = gg.check(model, torch.randn(32, 64))
    assert "dead_units" in [f.kind for f in report.findings]
    assert max(r.dead_frac for r in report.layers if r.activation == "ReLU") > 0.5


# ---- numbers against autograd ------------------------------------------------------------------


def test_layer_gradients_match_autograd_with_given_loss():
    model = mlp(3, 32, nn.Tanh, sw2=1.0, d_in=20, d_out=5)
    x, y = torch.randn(12, 20), torch.randn(12, 5)
    loss_fn = nn.MSELoss()
    report = gg.check(model, x, loss_fn=loss_fn, target=y)

    ref = copy.deepcopy(model)
    outs = {}

    def keep(name):
        def hook(mod, args, out):
            out.retain_grad()
            outs[name] = out

        return hook

    for name, m in ref.named_modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(keep(name))
    loss = loss_fn(ref(x), y)
    loss.backward()
    assert report.loss == pytest.approx(loss.item(), rel=1e-6)
    assert [r.name for r in report.layers] == ["0", "2", "4", "6"]
    for r in report.layers:
        m = ref.get_submodule(r.name)
        g = torch.cat([m.weight.grad.flatten(), m.bias.grad.flatten()])
        assert r.grad_rms == pytest.approx(
            torch.linalg.vector_norm(g).item() / math.sqrt(g.numel()), rel=1e-5
        )
        assert r.act_grad_norm == pytest.approx(
            torch.linalg.vector_norm(outs[r.name].grad).item(), rel=1e-5
        )
        assert r.q == pytest.approx(outs[r.name].detach().pow(2).mean().item(), rel=1e-5)
        act = torch.tanh(outs[r.name]).detach() if r.activation else outs[r.name].detach()
        assert r.act_std == pytest.approx(act.std(unbiased=False).item(), rel=1e-4)
    rows = report.layers
    assert rows[2].gain == pytest.approx(rows[1].act_grad_norm / rows[2].act_grad_norm)


def test_default_loss_sends_a_unit_gradient_into_the_output():
    model = mlp(4, 32, nn.Tanh, sw2=1.0)
    report = gg.check(model, torch.randn(8, 32))
    assert report.layers[-1].act_grad_norm == pytest.approx(1.0, rel=1e-5)


def test_jacobian_against_exact_singular_values():
    model = mlp(3, 24, nn.Tanh, sw2=1.5, d_in=16, d_out=12).double()
    x = torch.randn(8, 16, dtype=torch.float64)
    report = gg.check(model, x)
    sv = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i])  # (12, 16)
        sv.append(torch.linalg.svdvals(jac))
    sv = torch.stack(sv)
    assert report.jacobian is not None
    assert report.jacobian.max_singular_value == pytest.approx(sv.max().item(), rel=2e-2)
    assert report.jacobian.mean_sq_singular_value == pytest.approx(
        sv.pow(2).mean().item(), rel=0.15
    )


def test_mean_field_prediction_beside_measurement():
    model = mlp(12, 256, nn.Tanh, sw2=1.5, bias=0.0)
    report = gg.check(model, torch.randn(16, 256))
    rows = report.layers
    assert all(math.isfinite(r.pred_q) for r in rows)
    q_meas = np.array([r.q for r in rows[:-1]])
    q_pred = np.array([r.pred_q for r in rows[:-1]])
    np.testing.assert_allclose(q_pred, q_meas, rtol=0.1)
    g_meas = np.array([r.gain for r in rows[3:-1]])
    g_pred = np.array([r.pred_gain for r in rows[3:-1]])
    assert np.exp(np.log(g_meas).mean()) == pytest.approx(np.exp(np.log(g_pred).mean()), rel=0.03)


# ---- the model is left exactly as found ----------------------------------------------------------


def _snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "grad_values": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    }  # fmt: skip


def _assert_same(model, before):
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    assert before["modes"] == after["modes"]
    assert before["flags"] == after["flags"]
    assert all(a is b for a, b in zip(before["grads"], after["grads"]))
    for a, b in zip(before["grad_values"], after["grad_values"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["hooks"] == after["hooks"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: mlp(50, 64, nn.Sigmoid, std=0.01),
        lambda: mlp(10, 64, nn.Tanh, sw2=4.0),
        lambda: mlp(10, 64, nn.ReLU, sw2=2.0),
        lambda: mlp(4, 64, nn.ReLU, sw2=2.0, bn=True),
    ],
)
def test_model_unchanged(build):
    model = build()
    model.train()
    model[0].eval()  # a mixed-mode model stays mixed
    list(model.parameters())[2].requires_grad_(False)  # a frozen weight stays frozen
    x = torch.randn(32, 64)
    model(x).sum().backward()  # pre-existing .grad fields
    before = _snapshot(model)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    gg.check(model, torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1]) and random.getstate() == rng[2]
    _assert_same(model, before)


def test_batchnorm_running_stats_and_dropout_untouched_in_train_mode():
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)
    )
    model.train()
    before = _snapshot(model)
    x = torch.randn(40, 8)  # > 16 examples: the Jacobian takes its own pass
    rng = torch.get_rng_state()
    report = gg.check(model, x)
    assert report.jacobian is not None
    _assert_same(model, before)
    assert int(model[1].num_batches_tracked) == 0
    assert torch.equal(torch.get_rng_state(), rng)


def test_hooks_removed_and_state_restored_when_the_model_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            return self.fc(self.bn(x)).view(-1, 3)  # 4 * batch is not divisible by 3

    model = Boom()
    before = _snapshot(model)
    with pytest.raises(GradguardError, match="failed on the example input"):
        gg.check(model, torch.randn(5, 4))
    _assert_same(model, before)


# ---- inputs and rendering ------------------------------------------------------------------------


def test_integer_input_skips_the_jacobian():
    model = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 6, 4))
    report = gg.check(model, torch.randint(0, 50, (8, 6)))
    assert report.jacobian is None and any("Jacobian skipped" in n for n in report.notes)
    assert [r.kind for r in report.layers] == ["Embedding", "Linear"]
    assert math.isfinite(report.layers[0].grad_rms)


def test_bad_inputs():
    with pytest.raises(GradguardError, match="nn.Module"):
        gg.check("not a model", torch.randn(2, 2))
    with pytest.raises(GradguardError, match="no parameters"):
        gg.check(nn.ReLU(), torch.randn(2, 2))
    with pytest.raises(GradguardError, match=r"\(3, 7\)"):
        gg.check(nn.Linear(5, 2), torch.randn(3, 7))
    with pytest.raises(GradguardError, match="scalar"):
        gg.check(nn.Linear(5, 2), torch.randn(3, 5), loss_fn=lambda out: out)


def test_report_renders_and_serialises():
    from rich.console import Console

    report = gg.check(mlp(3, 16, nn.Tanh, sw2=1.0), torch.randn(8, 16))
    d = json.loads(json.dumps(report.to_dict()))
    assert d["verdict"] == report.verdict and len(d["layers"]) == 4
    text = str(report)
    assert "verdict: " in text and "act_grad" in text and "pred_gain" in text
    console = Console(width=160, record=True, color_system=None)
    console.print(report)
    out = console.export_text()
    assert "gradguard check" in out and "Linear" in out and report.verdict in out


def test_nonfinite_at_init_is_critical():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.fill_(3e38)  # x @ W overflows float32
    report = gg.check(model, torch.rand(4, 8) + 1.0)
    assert report.findings[0].kind == "nonfinite"
    assert report.findings[0].severity == gg.Severity.CRITICAL
    assert report.verdict == "exploding"


def test_tuple_output_and_dict_input():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x, scale=1.0):
            return self.fc(x) * scale, "extra"

    report = gg.check(Net(), {"x": torch.randn(4, 6), "scale": 2.0})
    assert report.layers[0].name == "fc" and report.jacobian is None
    assert report.layers[0].act_grad_norm == pytest.approx(2.0, rel=1e-5)  # d<y*2, u>/d fc = 2u


def test_frozen_model_with_integer_input_and_failing_loss():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2)).requires_grad_(False)
    with pytest.raises(GradguardError, match="does not depend on any trainable parameter"):
        gg.check(model, torch.randint(0, 10, (3, 2)))
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(GradguardError, match="loss_fn failed"):
        mse = lambda out, t: (out - t).pow(2).mean()  # noqa: E731
        gg.check(nn.Linear(4, 2), torch.randn(3, 4), loss_fn=mse, target=torch.randn(5, 7))


def test_jacobian_failure_is_a_note_not_an_error():
    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            assert x.shape[0] == 20, "needs a batch of 20"
            return self.fc(x)

    report = gg.check(FixedBatch(), torch.randn(20, 3))  # Jacobian pass would use 16 examples
    assert report.jacobian is None
    assert any("needs a batch of 20" in n for n in report.notes)
    assert math.isfinite(report.layers[0].grad_rms)
