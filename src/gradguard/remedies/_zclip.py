"""ZClip (Kumar et al. 2025): clip gradient-norm spikes by their z-score against an EMA."""

from __future__ import annotations

from typing import Any

import torch

from gradguard.record.kernels import scale_, total_norm
from gradguard.remedies._checks import check_number
from gradguard.remedies._clipper import Clipper

__all__ = ["ZClip"]


class ZClip(Clipper):
    """Clip the global gradient norm when its z-score against recent norms exceeds ``z_thresh``.

    State (all 0-d float32 tensors on the device): ``mean`` and ``var`` of the gradient norm and
    ``count`` of finite norms seen, and ``peak``, the largest (clipped) norm of the warm-up. The
    first ``warmup`` finite norms set mean and variance by a running average; a blow-up in those
    first steps is not let through meanwhile: during the warm-up a norm above
    ``warmup_factor * peak`` is scaled down to that bound (an absolute rule: the z-score has no
    statistics yet). After that, with ``z = (n - mean) / std``, a norm with
    ``z > z_thresh`` is scaled down to ``mean + z_thresh * std``, and the (clipped) norm ``c``
    updates the exponential moving averages::

        d = c - mean;  mean += (1 - alpha) * d;  var = alpha * (var + (1 - alpha) * d**2)

    A non-finite norm changes no state and leaves the gradients untouched.

    Args:
        alpha: EMA decay in (0, 1); larger = longer memory.
        z_thresh: z-score above which a norm counts as a spike (> 0).
        warmup: number of finite norms used to initialise mean and variance (>= 1).
        warmup_factor: during the warm-up, a norm above this many times the largest norm seen so
            far is clipped to that bound (> 1; None: no clipping during the warm-up).
        eps: added to the standard deviation (avoids dividing by zero).

    >>> clipper = ZClip(alpha=0.97, z_thresh=2.5, warmup=25)
    """

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        warmup: int = 25,
        eps: float = 1e-6,
        warmup_factor: float | None = 10.0,
    ) -> None:
        super().__init__()
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0, high_inclusive=False)
        self.z_thresh = check_number("z_thresh", z_thresh, low=0.0)
        self.warmup = int(check_number("warmup", warmup, low=1, low_inclusive=True, integer=True))
        self.eps = check_number("eps", eps, low=0.0, low_inclusive=True)
        self.warmup_factor = (
            None if warmup_factor is None else check_number("warmup_factor", warmup_factor, low=1.0)
        )
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.peak: torch.Tensor | None = None

    def _ensure_state(
        self, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean is None or self.var is None or self.count is None or self.peak is None:
            self.mean, self.var, self.count, self.peak = (
                torch.zeros((), device=device) for _ in range(4)
            )
        elif self.mean.device != device:
            self.mean, self.var, self.count, self.peak = (
                t.to(device) for t in (self.mean, self.var, self.count, self.peak)
            )
        return self.mean, self.var, self.count, self.peak

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        norm = total_norm(grads)
        mean, var, count, peak = self._ensure_state(norm.device)
        finite = torch.isfinite(norm)
        warm = count >= self.warmup
        std = var.clamp(min=0).sqrt() + self.eps
        limit = mean + self.z_thresh * std
        if self.warmup_factor is not None:  # warm-up: far above the largest norm so far
            limit = torch.where(warm | (count == 0), limit, self.warmup_factor * peak)
            armed = finite & ((count > 0) | warm)
        else:
            armed = finite & warm
        spike = armed & (norm > limit)  # after the warm-up: z = (norm - mean) / std > z_thresh
        factor = torch.where(spike, limit / (norm + 1e-6), torch.ones_like(norm))
        scale_(grads, factor)
        clipped = torch.where(finite, norm * factor, mean)  # what enters the statistics
        # warmup: running mean / population variance (Welford); afterwards: EMA
        k = count + 1
        d = clipped - mean
        mean_w = mean + d / k
        var_w = var + (d * (clipped - mean_w) - var) / k
        mean_e = mean + (1 - self.alpha) * d
        var_e = self.alpha * (var + (1 - self.alpha) * d * d)
        new_mean = torch.where(warm, mean_e, mean_w)
        new_var = torch.where(warm, var_e, var_w)
        mean.copy_(torch.where(finite, new_mean, mean))
        var.copy_(torch.where(finite, new_var, var))
        peak.copy_(torch.where(finite & ~warm, torch.maximum(peak, clipped), peak))
        count.add_(finite.to(count.dtype))
        return norm, norm * factor

    def _config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "z_thresh": self.z_thresh,
            "warmup": self.warmup,
            "warmup_factor": self.warmup_factor,
        }
