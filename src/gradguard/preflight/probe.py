"""A short trial: a few Adam steps on the given batch, at a few learning rates, then put back.

The static signals of one pass see the net's geometry at init; a trial sees whether the loss
actually moves. It needs the real task (``loss_fn`` and ``target``): fitting the check's default
random projection says nothing about training. The weights and buffers are copied back after
each learning rate and at the end; ``.grad``, modes and RNG states are restored by the check's
:class:`~gradguard.preflight.state.PreservedState`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gradguard.model.tensors import call_model, default_loss

__all__ = ["PROBE_LRS", "probe"]

PROBE_LRS = (1e-3, 1e-2)  # Adam; the calibration grid's trial used these
_DIVERGED = 10.0  # loss ratio recorded for a trial whose loss became non-finite


def probe(
    model: nn.Module,
    example_input: Any,
    loss_fn: Callable[..., Any],
    target: Any,
    *,
    steps: int,
    lrs: Sequence[float] = PROBE_LRS,
) -> float:
    """log10 of the best (over ``lrs``) ratio loss after ``steps`` Adam steps / loss before."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        saved = [(t, t.detach().clone()) for t in [*model.parameters(), *model.buffers()]]

    def put_back() -> None:
        with torch.no_grad():
            for t, s in saved:
                t.copy_(s)

    def loss_now() -> torch.Tensor:
        return default_loss(call_model(model, example_input), loss_fn, target)

    best = math.inf
    try:
        for lr in lrs:
            put_back()
            opt = torch.optim.Adam(params, lr=lr)
            with torch.enable_grad():
                first = float(loss_now().detach())
                for _ in range(steps):
                    loss = loss_now()
                    if not torch.isfinite(loss):
                        break
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                last = float(loss_now())
            ok = math.isfinite(first) and math.isfinite(last) and first > 0
            best = min(best, last / first if ok else _DIVERGED)
    finally:
        put_back()
    return math.log10(max(best, 1e-30))
