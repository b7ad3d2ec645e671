"""One observed forward pass: which layers ran in which order, what they produced.

Forward hooks on every layer (module owning parameters) and on every activation module record
calls in execution order and per-call statistics of the outputs (sums, not std_mean: cheaper).
Layer outputs are kept so their gradients can be asked for with ``torch.autograd.grad``; the hooks
are removed in ``finally`` even when the model raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradguard.model.activations import ACTIVATION_KINDS, activation_bounds, saturation_tolerance
from gradguard.model.layers import LayerInfo
from gradguard.model.tensors import first_tensor
from gradguard.record.kernels import activation_sums

__all__ = ["Call", "Observed", "observe_forward"]


@dataclass
class Stats:
    """Running sums over calls of one module's output."""

    n: int = 0
    s1: float = 0.0
    s2: float = 0.0
    zeros: int = 0
    saturated: int = 0
    nonfinite: int = 0
    units_alive: torch.Tensor | None = None  # bool per unit: nonzero somewhere in the batch
    rows: int = 0  # examples per unit seen

    def add(self, t: torch.Tensor, bounds: tuple[float, float] | None, unit_dim: int) -> None:
        t = t.detach()
        if not t.is_floating_point() or t.numel() == 0:
            return
        f = t.float()
        finite = torch.isfinite(f)
        bad = int((~finite).sum())
        self.nonfinite += bad
        f = torch.where(finite, f, torch.zeros((), dtype=f.dtype, device=f.device))
        self.n += f.numel()
        # the Monitor's kernel (one pass per statistic); the check reads the sums at once
        band = saturation_tolerance(bounds) if bounds is not None else None
        s1, s2, zeros, sat = activation_sums(f, band).tolist()
        self.s1 += s1
        self.s2 += s2
        self.zeros += int(zeros) - bad  # a NaN/Inf output (zeroed above) is not a zero
        self.saturated += int(sat)
        nz = (f != 0) | ~finite  # a NaN/Inf output is not a dead unit either
        if f.ndim >= 2:
            dim = unit_dim % f.ndim
            alive = nz.movedim(dim, -1).reshape(-1, f.shape[dim]).any(dim=0)
            self.units_alive = alive if self.units_alive is None else self.units_alive | alive
            self.rows += f.numel() // f.shape[dim]


@dataclass
class Call:
    """One call of a layer or activation module, in execution order."""

    module: nn.Module
    is_layer: bool
    input: torch.Tensor | None
    output: torch.Tensor | None


@dataclass
class Observed:
    """What one forward pass showed."""

    output: Any
    calls: list[Call]
    layer_stats: dict[int, Stats] = field(default_factory=dict)  # id(module) -> output stats
    act_stats: dict[int, Stats] = field(default_factory=dict)  # id(activation) -> output stats
    # filled in by the check: layers in first-call order, and layer name -> its activation call
    order: list[LayerInfo] = field(default_factory=list)
    linked: dict[str, Call | None] = field(default_factory=dict)


def _unit_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.modules.conv._ConvNd | nn.modules.batchnorm._NormBase) else -1


def observe_forward(model: nn.Module, layers: list[LayerInfo], run: Any) -> Observed:
    """Call ``run()`` (which calls the model) with recording hooks on layers and activations."""
    calls: list[Call] = []
    obs = Observed(output=None, calls=calls)
    layer_ids = {id(info.module) for info in layers}
    handles = []

    def make_hook(module: nn.Module, is_layer: bool) -> Any:
        bounds = None if is_layer else activation_bounds(module)
        table = obs.layer_stats if is_layer else obs.act_stats
        unit = _unit_dim(module)

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            t = first_tensor(out)
            inp = first_tensor(args)
            calls.append(Call(mod, is_layer, inp, t))
            if t is not None:
                table.setdefault(id(mod), Stats()).add(t, bounds, unit)

        return hook

    try:
        for m in model.modules():
            if id(m) in layer_ids:
                handles.append(m.register_forward_hook(make_hook(m, True)))
            elif type(m).__name__ in ACTIVATION_KINDS:
                handles.append(m.register_forward_hook(make_hook(m, False)))
        obs.output = run()
    finally:
        for h in handles:
            h.remove()
    return obs
