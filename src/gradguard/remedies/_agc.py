"""Adaptive gradient clipping (Brock et al. 2021, NFNets): unit-wise ||g|| / ||w|| ratio."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from gradguard.remedies._checks import check_number
from gradguard.remedies._clipper import Clipper

__all__ = ["AGC", "unit_norms"]


def unit_norms(t: torch.Tensor) -> torch.Tensor:
    """Float32 L2 norm of each unit of ``t``: rows (dim 0) of a matrix or conv kernel,
    the whole tensor for a bias or gain (ndim <= 1). Shape: ``(out, 1, ..., 1)``, or ``(1,)`` / ``()``."""
    if t.ndim <= 1:
        return torch.linalg.vector_norm(t, dtype=torch.float32).reshape((1,) * t.ndim)
    return torch.linalg.vector_norm(
        t, dim=tuple(range(1, t.ndim)), keepdim=True, dtype=torch.float32
    )


def _unit_norms_all(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`unit_norms` of every tensor; biases and gains go through one foreach kernel
    per device (one small kernel each would cost more than the reading)."""
    out: list[torch.Tensor] = [t for t in tensors]  # placeholders, replaced below
    small: dict[torch.device, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if t.ndim <= 1:
            small[t.device].append(i)
        else:
            out[i] = unit_norms(t)
    for idx in small.values():
        norms = torch._foreach_norm([tensors[i] for i in idx], 2, dtype=torch.float32)
        for i, n in zip(idx, norms):
            out[i] = n.reshape((1,) * tensors[i].ndim)
    return out


class AGC(Clipper):
    """Clip each unit's gradient so that ``||g_i|| <= clipping * max(||w_i||, eps)``.

    A unit is a row of a weight (an output neuron or conv filter); a bias or gain is one
    unit. Units above the limit are rescaled to it, the others are untouched. Norms of all
    units are gathered into one flat vector so the decision is a handful of kernels; a
    unit whose gradient norm is not finite is left as it is.

    Args:
        clipping: the largest allowed ratio ``||g|| / ||w||`` per unit (> 0), 0.01 in the paper
            for batch size up to 4096 (smaller for larger batches).
        eps: floor on ``||w||`` so zero-initialised units can still move.

    Returns (on call): the global gradient L2 norm before clipping.

    >>> clipper = AGC(clipping=0.01)
    """

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        super().__init__()
        self.clipping = check_number("clipping", clipping, low=0.0)
        self.eps = check_number("eps", eps, low=0.0)

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g_units = _unit_norms_all(grads)
        w_units = _unit_norms_all([p for p in params if p.grad is not None])  # under no_grad
        # one flat vector of unit norms: the decision is a few kernels, not a few per tensor
        g_flat = torch.cat([u.view(-1) for u in g_units])  # (units,)
        w_flat = torch.cat([u.view(-1) for u in w_units])
        limit = w_flat.clamp(min=self.eps) * self.clipping
        factor = torch.where(
            torch.isfinite(g_flat) & (g_flat > limit),
            limit / g_flat.clamp(min=1e-6),
            torch.ones_like(g_flat),
        )
        before = torch.linalg.vector_norm(g_flat)  # sum of unit norms^2 = global norm^2
        after = torch.linalg.vector_norm(g_flat * factor)
        factors = [
            f.view(u.shape) for f, u in zip(factor.split([u.numel() for u in g_units]), g_units)
        ]
        torch._foreach_mul_(grads, factors)  # broadcasts (out, 1, ...) over each unit
        return before, after

    def _config(self) -> dict[str, Any]:
        return {"clipping": self.clipping, "eps": self.eps}
