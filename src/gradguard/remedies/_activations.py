"""Which activation follows each weight layer: from a forward trace or registration order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.model.tensors import call_model

__all__ = ["Activation", "activation_of", "leaf_order", "is_weight_layer"]

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

# activation module -> name understood by torch.nn.init.calculate_gain (GELU, SiLU, ELU, Mish
# are ReLU-like: they get the ReLU gain, which is what people use for them in practice)
_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SELU: "selu",  # gain 1 (LeCun init), not calculate_gain("selu"): see Activation.init_name
    nn.GELU: "relu",
    nn.SiLU: "relu",
    nn.ELU: "relu",
    nn.CELU: "relu",
    nn.Mish: "relu",
    nn.Hardtanh: "linear",
    nn.Softplus: "relu",
}


@dataclass(frozen=True)
class Activation:
    """The activation chosen for a layer and where that choice came from."""

    name: str  # what calculate_gain understands: "relu", "tanh", "leaky_relu", "linear", ...
    param: float | None  # negative slope for leaky_relu, else None
    label: str  # what to show: the module class ("GELU") or the name
    source: str  # "given", "forward trace", "registration order", "output layer", "default"

    @property
    def gain(self) -> float:
        """The init gain; 1 for SELU (see :attr:`init_name`), else ``calculate_gain``'s."""
        return float(nn.init.calculate_gain(self.init_name, self.param))  # type: ignore[arg-type]

    @property
    def init_name(self) -> str:
        """The nonlinearity to hand to ``torch.nn.init``: SELU's self-normalisation (Klambauer
        et al. 2017) needs Var(W) = 1/fan_in (LeCun), i.e. gain 1 -- torch's docs say to pass
        'linear' for it; ``calculate_gain('selu')`` = 3/4 trades that fixed point away."""
        return "linear" if self.name == "selu" else self.name


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


def activation_of(order: list[nn.Module], i: int, source: str, default: str) -> Activation:
    """The activation after ``order[i]``: skip transparent modules, stop at the next layer."""
    for m in order[i + 1 :]:
        if isinstance(m, _TRANSPARENT):
            continue
        for cls, name in _NAMES.items():
            if isinstance(m, cls):
                slope = float(m.negative_slope) if isinstance(m, nn.LeakyReLU) else None
                return Activation(name, slope, type(m).__name__, source)
        if is_weight_layer(m):
            break  # two weight layers in a row: no activation module between them
        break  # something else (a custom module, an embedding...): unknown
    else:
        return Activation("linear", None, "none", "output layer")
    return Activation(default, None, default, "default (no activation module found)")
