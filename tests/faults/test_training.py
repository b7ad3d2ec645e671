"""The fault matrix, training faults: NaN/Inf in the input, a layer's forward output, a layer's
gradient, the loss; fp16/bf16 autocast with GradScaler overflow; a loss spike; odd models.

Each row runs the same tiny training twice, plainly and under ``gg.watch(store=...)``, and
asserts (a) identical losses and weights, (b) every flushed row in the store, (c) the expected
finding at the injected step and layer, (d) no other warning-or-worse finding
(tests/faults/harness.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradguard as gg
from tests.faults.harness import FAULT_STEP, Case, Expect, check_row, mlp3, nan_at
from tests.faults.matrix import register
from tests.fixtures.models import CNN, LSTMNet

K = FAULT_STEP
LAYERS = ("0", "2", "4")  # mlp3's Linear layers, forward order


def forward_fault(layer: str, value: float) -> Callable[[nn.Module], None]:
    """``layer``'s output gets ``value`` at step K (a forward hook, in both runs alike)."""

    def install(model: nn.Module) -> None:
        seen = {"n": 0}

        def count(module: nn.Module, args: Any) -> None:
            seen["n"] += 1

        def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            return nan_at(K, value)(seen["n"] - 1, out)

        model.register_forward_pre_hook(count)
        dict(model.named_modules())[layer].register_forward_hook(hook)

    return install


def grad_fault(layer: str, value: float) -> Callable[[int, nn.Module], None]:
    def put(s: int, model: nn.Module) -> None:
        if s == K:
            grad = next(dict(model.named_modules())[layer].parameters(recurse=False)).grad
            grad.view(-1)[0] = value

    return put


def scaler_stepper(
    init_scale: float, inject: float | None = None
) -> Callable[[nn.Module, torch.optim.Optimizer], tuple[Any, dict[str, Any]]]:
    """``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``; ``inject``: an inf in
    layer '2''s gradient at step K (what an overflow leaves)."""

    def make(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[Any, dict[str, Any]]:
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)

        def step(loss: torch.Tensor, s: int) -> None:
            scaler.scale(loss).backward()
            if inject is not None and s == K:
                model[2].weight.grad.view(-1)[0] = inject
            scaler.step(opt)
            scaler.update()

        return step, {"scaler": scaler}

    return make


def guard_stepper(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[Any, dict[str, Any]]:
    guard = gg.Guard(model, opt)

    def step(loss: torch.Tensor, s: int) -> None:
        loss.backward()
        if s == K:
            model[2].weight.grad.view(-1)[0] = math.nan
        guard.step(loss=loss)

    return step, {"guard": guard}


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.mid = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 2)
        self.mid.weight = self.enc.weight  # tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.mid(torch.tanh(self.enc(x)))))


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = mlp3()
        self.spare = nn.Linear(4, 4)  # never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SparseEmb(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4, sparse=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(x).mean(1)))


class ZeroParam(nn.Module):
    """A layer whose parameter has no elements, beside ordinary ones."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp3()
        self.empty = nn.Linear(0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.empty(x[:, :0]).sum()


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = mlp3()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(x)
        return out, out.detach().abs().mean()


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"logits": self.body(x), "aux": x.mean()}


def frozen() -> nn.Module:
    model = mlp3()
    model[0].requires_grad_(False)
    return model


def tokens(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(s)
    return torch.randint(0, 20, (16, 3), generator=g), torch.randn(16, 2, generator=g)


def sgd(lr: float = 0.05) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr)


# name -> (case, the expected finding or None)
ROWS: dict[str, tuple[Case, Expect | None]] = {}
for bad, word in ((math.nan, "NaN"), (math.inf, "Inf")):
    # An Inf in the input becomes +-1 after layer 0's Tanh, so the recorded activation (taken
    # after the Tanh) is finite; the first non-finite statistic is layer 0's gradient (x^T delta
    # with an Inf in x): the finding names step K and layer 0 but the backward pass.
    ROWS[f"{word} in the input"] = (
        Case(on_input=nan_at(K, bad)),
        Expect("nonfinite", K, "0", "forward" if word == "NaN" else "backward"),
    )
    ROWS[f"{word} in the loss"] = (
        Case(on_loss=nan_at(K, bad)),
        Expect("nonfinite", K, None, "loss"),
    )
    for lay in LAYERS:
        # An Inf output of a layer followed by Tanh is absorbed (tanh(Inf) = 1, tanh'(Inf) = 0):
        # no number of the run is non-finite, and nothing may be reported
        absorbed = word == "Inf" and lay != LAYERS[-1]
        ROWS[f"{word} in layer {lay}'s forward output"] = (
            Case(on_model=forward_fault(lay, bad)),
            None if absorbed else Expect("nonfinite", K, lay, "forward"),
        )
        ROWS[f"{word} in layer {lay}'s gradient"] = (
            Case(on_grads=grad_fault(lay, bad)),
            Expect("nonfinite", K, lay, "backward"),
        )


def images(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(s)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)


def sequences(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(s)
    return torch.randint(0, 20, (16, 6), generator=g), torch.randint(0, 2, (16,), generator=g)


# The same numeric faults on a CNN (conv, batch norm, conv, linear head) and an LSTM
# (embedding, 2-layer LSTM, linear head): NaN in the input or the embedding's output, in each
# layer's gradient, in the loss.
for label, make, data, layers, first in (
    ("CNN", CNN, images, ("conv1", "bn", "conv2", "head"), "conv1"),
    ("LSTMNet", LSTMNet, sequences, ("emb", "lstm", "out"), "emb"),
):
    common: dict[str, Any] = {"model": make, "batch": data, "loss_of": F.cross_entropy}
    if label == "CNN":
        ROWS[f"{label}: NaN in the input"] = (
            Case(on_input=nan_at(K), **common),
            Expect("nonfinite", K, first, "forward"),
        )
    else:
        ROWS[f"{label}: NaN in the embedding's output"] = (
            Case(on_model=forward_fault("emb", math.nan), **common),
            Expect("nonfinite", K, first, "forward"),
        )
    ROWS[f"{label}: NaN in the loss"] = (
        Case(on_loss=nan_at(K), **common),
        Expect("nonfinite", K, None, "loss"),
    )
    for lay in layers:
        if label == "CNN":  # the LSTM's output is a tuple: its input row covers its forward
            ROWS[f"{label}: NaN in {lay}'s forward output"] = (
                Case(on_model=forward_fault(lay, math.nan), **common),
                Expect("nonfinite", K, lay, "forward"),
            )
        ROWS[f"{label}: NaN in {lay}'s gradient"] = (
            Case(on_grads=grad_fault(lay, math.nan), **common),
            Expect("nonfinite", K, lay, "backward"),
        )

ROWS["fp16 autocast, GradScaler overflow (scale 2^24)"] = (
    Case(autocast=torch.float16, stepper=scaler_stepper(2.0**24), steps=8),
    None,
)
ROWS["bf16 autocast, GradScaler, Inf gradient"] = (
    Case(autocast=torch.bfloat16, stepper=scaler_stepper(2.0**8, math.inf)),
    None,
)
ROWS["gg.Guard skips a NaN gradient"] = (Case(stepper=guard_stepper), None)
ROWS["frozen first layer"] = (Case(model=frozen, optimizer=sgd()), None)
ROWS["tied weights"] = (Case(model=Tied), None)
ROWS["unused layer"] = (Case(model=Unused), None)
ROWS["sparse gradients (Embedding(sparse=True), SGD)"] = (
    Case(model=SparseEmb, batch=tokens),
    None,
)
ROWS["zero-element parameter"] = (Case(model=ZeroParam), None)
ROWS["tuple output"] = (Case(model=TupleOut, loss_of=lambda out, y: F.mse_loss(out[0], y)), None)
ROWS["dict output"] = (
    Case(model=DictOut, loss_of=lambda out, y: F.mse_loss(out["logits"], y)),
    None,
)


def _group(name: str) -> str:
    if "autocast" in name or "Guard" in name:
        return "precision"
    if "spike" in name or "NaN" in name or "Inf" in name:
        return "numeric"
    return "model"


for _name, (_case, _exp) in ROWS.items():
    _what = "(a) same numbers (b) store complete (d) no warning+"
    if _exp is not None:
        _what = (
            f"(a) (b) (c) {_exp.kind} at step {_exp.step}"
            + (f", layer {_exp.layer}" if _exp.layer else "")
            + (f", from the {_exp.origin}" if _exp.origin else "")
            + " (d)"
        )
    _model = (
        _case.model.__name__ if hasattr(_case.model, "__name__") else type(_case.model).__name__
    )
    register(_group(_name), _name, _model, 1, _what)


@pytest.mark.parametrize("name", list(ROWS))
def test_training_fault(name: str, tmp_path: Path) -> None:
    case, expect = ROWS[name]
    findings = check_row(case, expect, tmp_path)
    assert findings is not None


def test_scaler_and_guard_rows_mark_their_skips(tmp_path: Path) -> None:
    """The precision rows' skipped steps are in the store with their reason."""
    from tests.faults.harness import train

    got = train(ROWS["bf16 autocast, GradScaler, Inf gradient"][0], store=tmp_path / "a.db")
    assert got.run is not None and got.run.skipped == {K: "scaler_overflow"}
    got = train(ROWS["gg.Guard skips a NaN gradient"][0], store=tmp_path / "b.db")
    assert got.run is not None and got.run.skipped == {K: "nonfinite_grad"}
    got = train(ROWS["fp16 autocast, GradScaler overflow (scale 2^24)"][0], store=tmp_path / "c.db")
    assert got.run is not None and set(got.run.skipped.values()) == {"scaler_overflow"}
    assert 0 < len(got.run.skipped) < 8  # some steps overflowed, then the scale backed off
