"""Tensors gradguard reads off a model: the tensor a call produced, the local shard of a parameter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from gradguard.errors import GradguardError

__all__ = ["first_tensor", "local", "call_model", "default_loss"]


def first_tensor(x: Any) -> torch.Tensor | None:
    """The tensor a module call produced (or got): ``x`` itself; the ``logits`` of a mapping or a
    Hugging Face ``ModelOutput`` when present; else the first tensor found depth-first in a
    mapping's values or a tuple/list. None if there is none.

    >>> first_tensor((None, torch.ones(2))).tolist()
    [1.0, 1.0]
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, Mapping) or hasattr(x, "logits"):
        logits = x.get("logits") if isinstance(x, Mapping) else getattr(x, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        for v in x.values() if isinstance(x, Mapping) else ():
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, tuple | list):
        for v in x:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), else the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def call_model(model: nn.Module, inp: Any) -> Any:
    """Call ``model`` on a tensor, a tuple/list (positional arguments) or a dict (keyword arguments)."""
    if isinstance(inp, dict):
        return model(**inp)
    if isinstance(inp, tuple | list):
        return model(*inp)
    return model(inp)


def default_loss(
    out: Any,
    loss_fn: Callable[..., Any] | None = None,
    target: Any = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A scalar loss of a model's output, to backpropagate through it.

    With ``loss_fn``: ``loss_fn(out, target)`` (``loss_fn(out)`` without a target), which must give
    a scalar tensor. Without: the output's :func:`first_tensor` projected on a random unit
    direction (seeded: ``generator``, else seed 0) -- every output unit gets a gradient of the same
    expected size, and a NaN/Inf anywhere in the output makes the loss non-finite.

    Raises:
        GradguardError: ``loss_fn`` failed or did not return a scalar, or there is no float output.
    """
    if loss_fn is not None:
        try:
            loss = loss_fn(out, target) if target is not None else loss_fn(out)
        except Exception as e:
            raise GradguardError(
                f"loss_fn failed on the model's output: {type(e).__name__}: {e}; check that "
                "target matches the output's shape and dtype"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise GradguardError(
                f"loss_fn returned {type(loss).__name__} of shape "
                f"{tuple(getattr(loss, 'shape', ()))}; it must return a scalar tensor "
                "(use reduction='mean')"
            )
        return loss.reshape(())
    y = first_tensor(out)
    if y is None or not y.is_floating_point():
        raise GradguardError(
            f"the model returned {type(out).__name__}, not a float tensor; pass loss_fn= "
            "(and target=) to form a scalar loss"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    u = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(device=y.device, dtype=y.dtype)
    return (y * (u / u.norm())).sum()
