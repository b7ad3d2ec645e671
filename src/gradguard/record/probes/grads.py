"""Gradient statistics of every recorded step: per-layer norm, rms, max |g|, non-finite count; and
the weight norm on the steps that need it.

All of a step's numbers come from a few batched kernels over every gradient at once, reduced per
layer with ``index_add_``/``scatter_reduce_`` on the device; nothing is read on the host. The
weights are read only when asked (detail steps, where the update ratio needs ``||w_before||``, and
the first recorded step of each flush, so every flush holds the weight norms the rules read): a
pass over every weight costs as much as the gradient statistics themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gradguard.metrics import GRAD_MAX, GRAD_NORM, GRAD_RMS, NONFINITE, WEIGHT_NORM
from gradguard.model.layers import LayerInfo
from gradguard.model.tensors import local
from gradguard.record.buffer import StepBuffer
from gradguard.record.fused import StatsKernel
from gradguard.record.kernels import sumsq
from gradguard.record.reduce import Combine, Reducer

__all__ = ["GradientProbe"]

# rows handed to the reducer: squared norms are summed over ranks (divided by the copies of a
# parameter); max |g| and non-finite counts are maxed -- the same tensor non-finite on several ranks
# (DDP copies, FSDP2 shards) is one tensor
_HOW = (Combine.PARAM_SUM, Combine.PARAM_SUM, Combine.MAX, Combine.MAX)


class GradientProbe:
    """Writes grad_norm, grad_rms, grad_max, weight_norm, nonfinite and the total norm of a step.

    Args:
        layers: the watched layers; their ``column`` is their column in the buffer.
        device: where the numbers are kept.
        reducer: combines the numbers across ranks.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        device: torch.device,
        reducer: Reducer,
        kernel: str = "auto",
    ) -> None:
        self.n_layers = len(layers)
        self.kernel = StatsKernel(kernel)  # sum of squares and max |g|: eager or compiled
        self.device = device
        self.reducer = reducer
        # every owned parameter with its layer's column; the trainable ones get gradient statistics
        self.params: list[tuple[int, nn.Parameter]] = [
            (lay.column, p) for lay in layers for _, p in lay.params
        ]
        self.column = torch.tensor([c for c, _ in self.params], dtype=torch.long, device=device)
        self.trainable = [(c, p) for c, p in self.params if p.requires_grad]
        self._signatures: dict[
            tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        ] = {}

    def weights(self) -> list[torch.Tensor]:
        """The local (shard of each) parameter, detached, in ``params`` order."""
        return [local(p.detach()) for _, p in self.params]

    def take(self, buffer: StepBuffer, slot: int, *, weights: bool = True) -> None:
        """Measure the gradients as they are now into ``slot`` of ``buffer``; with ``weights``, also
        the weight norms (and non-finite weights in the non-finite count)."""
        L = self.n_layers
        present: list[int] = []
        grads: list[torch.Tensor] = []
        for i, (_, p) in enumerate(self.trainable):
            if p.grad is not None:
                present.append(i)
                grads.append(_dense_values(local(p.grad)))
        f64: dict[str, Any] = {"dtype": torch.float64, "device": self.device}
        rows = torch.zeros((4, L), **f64)  # grad sumsq, weight sumsq, max |g|, non-finite count
        rows[2].fill_(-math.inf)
        if weights:
            wsq = sumsq(self.weights())  # (P,) squared norms of every weight
            rows[1].index_add_(0, self.column, wsq)
            rows[3].index_add_(0, self.column, (~torch.isfinite(wsq)).to(torch.float64))
        if grads:
            col, inv_sqrt_n, has = self._signature(tuple(present))
            gsq, gmax = self.kernel(grads)
            rows[0].index_add_(0, col, gsq)
            rows[3].index_add_(0, col, (~torch.isfinite(gmax)).to(torch.float64))
            rows[2].scatter_reduce_(0, col, gmax, reduce="amax")
        else:
            inv_sqrt_n = torch.full((L,), math.nan, **f64)
            has = torch.zeros(L, dtype=torch.bool, device=self.device)
        rows = self.reducer.reduce(rows, _HOW)  # the one place where ranks are combined
        gnorm = torch.where(has, rows[0].sqrt(), math.nan)
        buffer.write(slot, GRAD_NORM, gnorm)
        buffer.write(slot, GRAD_RMS, gnorm * inv_sqrt_n)
        buffer.write(slot, GRAD_MAX, torch.where(has, rows[2], math.nan))
        if weights:
            buffer.write(slot, WEIGHT_NORM, rows[1].sqrt())
        buffer.write(slot, NONFINITE, rows[3])
        total = torch.where(has, rows[0], 0.0).sum().sqrt() if grads else math.nan
        buffer.write_total(slot, total)

    def decide_kernel(self) -> dict[str, Any] | None:
        """Let the statistics kernel choose its path on the gradients there are now (called at a
        flush); what it chose, for an event, or None."""
        if self.kernel.decided:
            return None
        grads = [_dense_values(local(p.grad)) for _, p in self.trainable if p.grad is not None]
        return self.kernel.decide(grads)

    def _signature(
        self, present: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-gradient layer column, per-layer 1/sqrt(numel) and 'has grad' mask for a set of
        grads (cached: the set is the same from step to step)."""
        got = self._signatures.get(present)
        if got is None:
            numel = [0] * self.n_layers
            col = []
            for i in present:
                c, p = self.trainable[i]
                numel[c] += p.numel()
                col.append(c)
            inv = torch.tensor(
                [1.0 / math.sqrt(n) if n else math.nan for n in numel],
                dtype=torch.float64,
                device=self.device,
            )
            has = torch.tensor([n > 0 for n in numel], device=self.device)
            got = (torch.tensor(col, dtype=torch.long, device=self.device), inv, has)
            if len(self._signatures) < 64:
                self._signatures[present] = got
        return got


def _dense_values(g: torch.Tensor) -> torch.Tensor:
    """What the norms read of a gradient: a sparse one (``nn.Embedding(sparse=True)``) by the
    values it holds -- the entries it leaves out are zeros, so its sum of squares and max |g| are
    those of its dense form -- after summing duplicate indices (``coalesce``)."""
    if g.layout == torch.strided:
        return g
    return g.coalesce().values()
