"""Which activation follows each weight layer: from a forward trace or registration order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.model.activations import kind_of
from gradguard.model.tensors import call_model

__all__ = ["ActivationChoice", "activation_of", "leaf_order", "is_weight_layer"]

# modules that pass the signal on without changing its scale much: look through them
_TRANSPARENT = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Flatten,
    nn.Unflatten,
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.pooling.MaxPool1d,
    nn.modules.pooling.MaxPool2d,
    nn.modules.pooling.MaxPool3d,
    nn.modules.pooling.AvgPool1d,
    nn.modules.pooling.AvgPool2d,
    nn.modules.pooling.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)


@dataclass(frozen=True)
class ActivationChoice:
    """The activation ``init_`` chose a layer's gain for, and where that choice came from."""

    nonlinearity: str  # what torch.nn.init gets: "relu", "tanh", "leaky_relu", "linear", ...
    param: float | None  # negative slope for leaky_relu, else None
    label: str  # what to show: the module class ("GELU") or the name
    source: str  # "given", "forward trace", "registration order", "output layer", "default"

    @property
    def gain(self) -> float:
        """``torch.nn.init.calculate_gain`` of :attr:`nonlinearity` (SELU's is 1: the activation
        table hands ``"linear"`` for it, see :class:`~gradguard.model.activations.ActivationKind`)."""
        return float(nn.init.calculate_gain(self.nonlinearity, self.param))  # type: ignore[arg-type]


def is_weight_layer(m: nn.Module) -> bool:
    return isinstance(m, _WEIGHT_LAYERS)


def leaf_order(model: nn.Module, data: Any = None) -> tuple[list[nn.Module], str]:
    """Leaf modules in forward order (traced with hooks when ``data`` is given), else in
    registration order. Returns (modules, how they were ordered). Hooks are always removed."""
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    if data is None:
        return leaves, "registration order"
    seen: list[nn.Module] = []
    ids: set[int] = set()

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        if id(mod) not in ids:
            ids.add(id(mod))
            seen.append(mod)

    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            call_model(model, data)
    finally:
        for h in handles:
            h.remove()
    return seen, "forward trace"


def activation_of(order: list[nn.Module], i: int, source: str, default: str) -> ActivationChoice:
    """The activation after ``order[i]``: skip transparent modules, stop at the next layer."""
    for m in order[i + 1 :]:
        if isinstance(m, _TRANSPARENT):
            continue
        kind = kind_of(m)
        if kind is not None and kind.nonlinearity is not None:
            slope = kind.params_of(m).get("negative_slope")
            return ActivationChoice(kind.nonlinearity, slope, type(m).__name__, source)
        if is_weight_layer(m):
            break  # two weight layers in a row: no activation module between them
        break  # something else (a custom module, an embedding...): unknown
    else:
        return ActivationChoice("linear", None, "none", "output layer")
    return ActivationChoice(default, None, default, "default (no activation module found)")
