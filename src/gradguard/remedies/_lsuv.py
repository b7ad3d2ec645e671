"""LSUV (Mishkin & Matas 2016): rescale each layer, in forward order, to unit output variance."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradguard.model.tensors import call_model

__all__ = ["lsuv_rescale"]


class _Stop(Exception):
    """Raised from a hook once the layer's output is captured: the rest of the pass is waste."""


def _output_var(model: nn.Module, layer: nn.Module, data: Any) -> float | None:
    """Variance of ``layer``'s first output on ``data`` (None if the layer did not run)."""
    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            captured.append(out.detach())
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        call_model(model, data)
    except _Stop:
        pass
    finally:
        handle.remove()
    return float(captured[0].float().var()) if captured else None


@torch.no_grad()
def lsuv_rescale(
    model: nn.Module, layer: nn.Module, data: Any, tol: float, max_iter: int
) -> tuple[float | None, int]:
    """Divide ``layer.weight`` by sqrt(output variance) until ``|var - 1| < tol``.

    Returns:
        (final output variance or None if the layer never ran on ``data``, passes used).
    """
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    var = _output_var(model, layer, data)
    it = 0
    while var is not None and abs(var - 1.0) >= tol and it < max_iter and var > 1e-12:
        weight.div_(var**0.5)
        var = _output_var(model, layer, data)
        it += 1
    return var, it
