"""Input-output Jacobian of one forward graph: mean squared and largest singular value.

Dynamical isometry (Pennington et al. 2017) asks that all singular values of J = dy/dx be near 1.
With the graph of ``y = model(x)`` retained:

- mean of sigma^2 = tr(J^T J) / (B * min(K, D)) with tr(J J^T) = E_u ||J^T u||^2 over Rademacher u
  (Hutchinson), B examples mapping D inputs to K outputs each (J of the batch is block-diagonal
  unless the model mixes examples, e.g. BatchNorm in train mode; the estimate stays right then);
- sigma_max by power iteration on J^T J, with J^T w a vector-Jacobian product and J v the
  derivative of the (linear in u) vjp J^T u with respect to u: no second forward pass, so dropout
  masks and BatchNorm statistics are those of the measured pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["JacobianStats", "jacobian_stats"]


@dataclass(frozen=True)
class JacobianStats:
    """How far the input-output map is from isometry.

    Args:
        mean_sq_singular_value: tr(J^T J) / (examples * min(in, out)); 1 for an isometry.
        max_singular_value: the largest singular value over the batch.
        probes: Hutchinson probes used.
        iterations: power iterations run.
    """

    mean_sq_singular_value: float
    max_singular_value: float
    probes: int
    iterations: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in self.__dict__.items()
        }


def jacobian_stats(
    y: torch.Tensor,
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    probes: int = 6,
    max_iter: int = 12,
    rtol: float = 1e-3,
) -> JacobianStats:
    """Estimate the Jacobian's spectrum from a retained graph (x requires grad)."""
    batch = x.shape[0] if x.ndim > 0 and y.ndim > 0 and y.shape[0] == x.shape[0] else 1
    d_in, d_out = x.numel() // batch, y.numel() // batch

    def rand(like: torch.Tensor, rademacher: bool = False) -> torch.Tensor:
        r = torch.randn(like.shape, generator=generator, dtype=like.dtype)
        return (r.sign() if rademacher else r).to(like.device)

    total = 0.0
    for _ in range(probes):
        (g,) = torch.autograd.grad(y, x, rand(y, True), retain_graph=True)
        total += float(g.double().pow(2).sum())
    msv = total / probes / (batch * min(d_in, d_out))

    sigma, it = math.nan, 0
    try:
        u = torch.zeros_like(y, requires_grad=True)
        (jt_u,) = torch.autograd.grad(y, x, u, create_graph=True)  # J^T u, linear in u
        v = rand(x)
        v = v / v.norm()
        prev = 0.0
        for it in range(1, max_iter + 1):  # noqa: B007
            (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
            sigma = float(jv.double().norm())
            (jtjv,) = torch.autograd.grad(y, x, jv, retain_graph=True)
            n = jtjv.norm()
            if not torch.isfinite(n) or float(n) == 0.0:
                break
            v = jtjv / n
            if abs(sigma - prev) <= rtol * sigma:
                break
            prev = sigma
    except RuntimeError:  # an op without double backward: leave sigma_max unknown
        sigma = math.nan
    return JacobianStats(msv, sigma, probes, it)
