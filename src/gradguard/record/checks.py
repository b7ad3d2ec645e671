"""What ``gg.watch`` checks before it installs anything, and what ``mon.log`` accepts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.errors import GradguardError

__all__ = ["check_watch_args", "loggable"]


def check_watch_args(model: Any, optimizer: Any, scaler: Any) -> None:
    """A module, an optimizer of *its* parameters (or None), a GradScaler (or None)."""
    if not isinstance(model, nn.Module):
        raise GradguardError(
            f"gg.watch expects a torch.nn.Module as its first argument, got {type(model).__name__}; "
            "pass the model (e.g. gg.watch(model, optimizer))"
        )
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise GradguardError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}; pass the optimizer "
            "object (e.g. torch.optim.SGD(model.parameters(), lr=0.1)), or None and call mon.step() yourself"
        )
    if optimizer is not None:
        check_optimizer_owns(model, optimizer, "gg.watch")
    if scaler is not None and not callable(getattr(scaler, "step", None)):
        raise GradguardError(
            f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}; pass "
            "scaler=torch.amp.GradScaler(...) (the one whose scaler.step(optimizer) you call)"
        )
    if scaler is not None and optimizer is None:
        raise GradguardError(
            "scaler= needs the optimizer the scaler steps; pass gg.watch(model, optimizer, "
            "scaler=scaler)"
        )


def check_optimizer_owns(model: nn.Module, optimizer: torch.optim.Optimizer, who: str) -> None:
    """The optimizer updates at least one of the model's parameters (else every update ratio would
    be 0 and no step would ever change the watched model)."""
    mine = {id(p) for p in model.parameters()}
    theirs = [p for g in optimizer.param_groups for p in g["params"]]
    if mine and theirs and not any(id(p) in mine for p in theirs):
        raise GradguardError(
            f"{who}: the optimizer holds none of the model's parameters (it was built for another "
            "model?); pass the optimizer of this model, e.g. torch.optim.SGD(model.parameters(), ...)"
        )


def loggable(name: str, v: Any) -> float | torch.Tensor:
    """A value for ``mon.log(name=v)``: a float, or a detached 0-d tensor (read at the flush)."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise GradguardError(
                f"mon.log({name}=...) got a tensor of shape {tuple(v.shape)}; log scalars only "
                "(e.g. loss.mean() or a 0-d tensor)"
            )
        return v.detach().reshape(())
    if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
        return float(v)
    raise GradguardError(
        f"mon.log({name}=...) got {type(v).__name__}; pass a number or a 0-d tensor"
    )
