"""Input checks shared by the remedies: each failure is a GradguardError naming the fix."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from gradguard.errors import ConfigError, GradguardError

__all__ = ["check_module", "check_optimizer", "check_number", "grads_of", "params_list"]


def check_module(model: Any, who: str) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module`` with parameters, else raise."""
    if not isinstance(model, nn.Module):
        raise GradguardError(
            f"{who} expects a torch.nn.Module, got {type(model).__name__}; "
            "pass the model itself (e.g. `net`, not `net.parameters()` or its output)"
        )
    if next(model.parameters(), None) is None:
        raise GradguardError(
            f"{who}: model {type(model).__name__} has no parameters; "
            "pass the module that owns the weights"
        )
    return model


def check_optimizer(optimizer: Any, who: str) -> torch.optim.Optimizer:
    """Return ``optimizer`` if it is a ``torch.optim.Optimizer``, else raise."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise GradguardError(
            f"{who} expects a torch.optim.Optimizer, got {type(optimizer).__name__}; "
            "pass the optimizer that steps the model, e.g. torch.optim.SGD(model.parameters(), lr=0.1)"
        )
    return optimizer


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = False,
    high_inclusive: bool = True,
    integer: bool = False,
) -> float:
    """Check that ``value`` is a finite real number in the given range; return it as float.

    Args:
        name: argument name used in the message.
        value: what the user passed.
        low, high: bounds (None = unbounded).
        low_inclusive, high_inclusive: whether the bounds are allowed.
        integer: require an int (bools are refused).

    Returns:
        ``float(value)``.
    """
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name} must be {kind}, got {value!r}; pass e.g. {name}={low or 1}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v < low if low_inclusive else v <= low)
    if high is not None:
        bad = bad or (v > high if high_inclusive else v >= high)
    if bad:
        lo = "-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{name}={value!r} is out of range; pass a value in {lo}, {hi}")
    return v


def params_list(parameters: Any, who: str) -> list[torch.Tensor]:
    """Turn a tensor or an iterable of tensors into a list, refusing modules and junk."""
    if isinstance(parameters, nn.Module):
        raise GradguardError(
            f"{who} got an nn.Module; pass its parameters: {who}(model.parameters())"
        )
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if not isinstance(parameters, Iterable):
        raise GradguardError(
            f"{who} expects parameters (a tensor or an iterable of tensors), got "
            f"{type(parameters).__name__}; pass model.parameters()"
        )
    out = list(parameters)
    for p in out:
        if not isinstance(p, torch.Tensor):
            raise GradguardError(
                f"{who} expects tensors, got a {type(p).__name__} in the iterable; "
                "pass model.parameters() (not named_parameters())"
            )
    return out


def grads_of(parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    """The existing ``.grad`` tensors of ``parameters`` (params without a grad are skipped)."""
    return [p.grad for p in parameters if p.grad is not None]
