"""locate_nonfinite names the module where NaN/Inf is born, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradguard as gg
from gradguard.errors import GradguardError


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # NaN for x < 0


class ZeroByZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0) / (x * 0)  # NaN everywhere


class Overflow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x * 1e3)  # Inf for x > ~0.09


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g * float("inf")


class InfGrad(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _InfGrad.apply(x)


def net_with(bad: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(inplace=True),
        nn.Sequential(nn.Linear(8, 8), bad, nn.Linear(8, 8)),
        nn.Tanh(),
        nn.Linear(8, 2),
    )


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._backward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    ) + sum(len(p._backward_hooks or {}) for p in model.parameters())


X, Y = torch.randn(16, 6), torch.randn(16, 2)


@pytest.mark.parametrize(
    "bad, nan, inf",
    [(Log(), True, False), (ZeroByZero(), True, False), (Overflow(), False, True)],
    ids=["log-negative", "zero-by-zero", "exp-overflow"],
)
def test_forward_nonfinite_is_named(bad: nn.Module, nan: bool, inf: bool) -> None:
    net = net_with(bad)
    where = gg.locate_nonfinite(net, X, F.mse_loss, Y)
    assert where is not None
    assert (where.phase, where.module, where.kind) == ("forward", "3.1", type(bad).__name__)
    (out,) = where.outputs
    assert (out.n_nan > 0) == nan and (out.n_inf > 0) == inf
    assert out.shape == (16, 8)
    (inp,) = where.inputs
    assert inp.finite and inp.min is not None and inp.min <= inp.max
    assert where.previous == "3.0"
    text = str(where)
    assert "3.1 [" + type(bad).__name__ + "]" in text and "forward order" in text
    assert ("NaN" in text) and ("Inf" in text)


def test_backward_inf_gradient_is_named_closest_to_the_loss() -> None:
    net = net_with(InfGrad())
    where = gg.locate_nonfinite(net, X, F.mse_loss, Y)
    assert where is not None
    assert (where.phase, where.module, where.kind) == ("backward", "3.1", "InfGrad")
    assert all(s.finite for s in where.inputs)  # grad_output came in finite
    assert where.outputs[0].n_inf == 16 * 8  # grad_input went Inf
    assert where.previous == "3.2"  # the module before it in backward order
    assert "closest to the loss" in str(where)


def test_functional_op_between_modules_is_explained() -> None:
    class Parent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.sqrt(self.a(x) - 100.0))  # NaN made outside any child

    where = gg.locate_nonfinite(Parent(), torch.randn(4, 3))
    assert where is not None and where.module == "b"
    assert "already non-finite" in where.note and where.previous == "a"


def test_state_is_restored() -> None:
    net = net_with(InfGrad()).train()
    F.mse_loss(net(X), Y).backward()  # the user's own grads
    grads = [p.grad.clone() for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    rng = torch.get_rng_state()
    assert gg.locate_nonfinite(net, X, F.mse_loss, Y) is not None
    for p, g in zip(net.parameters(), grads):
        torch.testing.assert_close(
            p.grad, g, equal_nan=True
        )  # the user's Inf/NaN grads, as they were
    for b, c in zip(net.buffers(), buffers):
        torch.testing.assert_close(b, c)
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.training and net[2].inplace
    assert hooks_left(net) == 0


def test_cuda_rng_is_saved_only_if_cuda_is_already_initialised(monkeypatch) -> None:
    """Reading the CUDA RNG state would create a CUDA context on a CPU-only run: don't."""
    net = net_with(InfGrad())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def no_cuda(*a, **k):
        raise AssertionError("locate_nonfinite initialised CUDA")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", no_cuda)
    assert gg.locate_nonfinite(net, X, F.mse_loss, Y) is not None
    # already initialised (a CUDA run): its RNG state is saved and put back
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: calls.append("get") or ["s"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: calls.append(f"set {s[0]}"))
    assert gg.locate_nonfinite(net, X, F.mse_loss, Y) is not None
    assert calls == ["get", "set s"]


def test_exception_in_model_is_wrapped_and_hooks_removed() -> None:
    net = net_with(nn.Identity())
    with pytest.raises(GradguardError, match="replaying"):
        gg.locate_nonfinite(net, torch.randn(4, 5))
    assert hooks_left(net) == 0 and net[2].inplace


def test_finite_model_input_and_loss_cases() -> None:
    net = net_with(nn.Identity())
    assert gg.locate_nonfinite(net, X, F.mse_loss, Y) is None
    bad_x = X.clone()
    bad_x[0, 0] = float("nan")
    where = gg.locate_nonfinite(net, bad_x)
    assert where is not None and where.phase == "input" and where.inputs[0].n_nan == 1
    where = gg.locate_nonfinite(net, X, lambda out, y: torch.log(out - 10).mean(), Y)
    assert where is not None and where.phase == "loss" and where.outputs[0].n_nan == 1


def test_bad_input() -> None:
    with pytest.raises(GradguardError, match="pass the model"):
        gg.locate_nonfinite("net", X)
    with pytest.raises(GradguardError, match="loss_fn must be callable"):
        gg.locate_nonfinite(net_with(nn.Identity()), X, loss_fn=3)
