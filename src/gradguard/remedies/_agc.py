"""Adaptive gradient clipping (Brock et al. 2021, NFNets): unit-wise ||g|| / ||w|| ratio."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from gradguard.remedies._checks import check_number
from gradguard.remedies._clipper import Clipper

__all__ = ["AGC", "unit_norms"]

_vector_norm = torch.linalg.vector_norm


def _unit_dims(t: torch.Tensor) -> int | tuple[int, ...]:
    return 1 if t.ndim == 2 else tuple(range(1, t.ndim))


def unit_norms(t: torch.Tensor) -> torch.Tensor:
    """Float32 L2 norm of each unit of ``t``: rows (dim 0) of a matrix or conv kernel,
    the whole tensor for a bias or gain (ndim <= 1). Shape: ``(out, 1, ..., 1)``, or ``(1,)`` / ``()``."""
    if t.ndim <= 1:
        return _vector_norm(t, dtype=torch.float32).reshape((1,) * t.ndim)
    return _vector_norm(t, dim=_unit_dims(t), keepdim=True, dtype=torch.float32)


class _DevicePlan:
    """Preallocated float32 buffers for one device's unit norms, and views into them.

    Every unit (row of a weight; a whole bias) owns one slot of ``g`` / ``w`` / ``factor``:
    the norms are written straight into their slots (``out=``), the decision is a few kernels
    on the flat buffers, and ``factor_views[k]`` is tensor k's slice shaped to broadcast over it.
    """

    def __init__(self, grads: list[torch.Tensor], idx: list[int]) -> None:
        dev = grads[idx[0]].device
        mats = [i for i in idx if grads[i].ndim > 1]
        self.small = [i for i in idx if grads[i].ndim <= 1]
        n = sum(grads[i].shape[0] for i in mats) + len(self.small)
        self.g, self.w, self.factor, self.tmp = torch.empty((4, n), dtype=torch.float32, device=dev)
        self.zeros = torch.zeros(n, dtype=torch.float32, device=dev)  # never written
        self.one = torch.ones((), dtype=torch.float32, device=dev)
        # (tensor index, reduced dims, grad-norm view, weight-norm view) per matrix
        self.mats: list[tuple[int, int | tuple[int, ...], torch.Tensor, torch.Tensor]] = []
        views: dict[int, torch.Tensor] = {}
        a = 0
        for i in mats:
            t = grads[i]
            b = a + t.shape[0]
            shape = (t.shape[0],) + (1,) * (t.ndim - 1)
            self.mats.append((i, _unit_dims(t), self.g[a:b].view(shape), self.w[a:b].view(shape)))
            views[i] = self.factor[a:b].view(shape)
            a = b
        self.small_start = a
        self.small_slots: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for j, i in enumerate(self.small):
            views[i] = self.factor[a + j : a + j + 1].view((1,) * grads[i].ndim)
            self.small_slots.append((i, self.g[a + j], self.w[a + j]))  # 0-d views
        self.cpu = dev.type == "cpu"
        self.idx = idx
        self.factor_views = [views[i] for i in idx]

    def run(
        self, weights: list[torch.Tensor], grads: list[torch.Tensor], clipping: float, eps: float
    ) -> None:
        """Unit norms of ``grads``/``weights`` into the buffers, then ``factor``; no host read."""
        f32 = torch.float32
        for i, dims, g_out, w_out in self.mats:
            g, w = grads[i], weights[i]
            # dtype= only where it changes something: it costs a slower kernel on fp32
            if g.dtype == f32:
                _vector_norm(g, dim=dims, keepdim=True, out=g_out)
            else:
                _vector_norm(g, dim=dims, keepdim=True, dtype=f32, out=g_out)
            if w.dtype == f32:
                _vector_norm(w, dim=dims, keepdim=True, out=w_out)
            else:
                _vector_norm(w, dim=dims, keepdim=True, dtype=f32, out=w_out)
        if self.cpu:  # biases and gains: on CPU one small kernel each, written in place
            for i, g_out, w_out in self.small_slots:
                _vector_norm(grads[i], dtype=f32, out=g_out)
                _vector_norm(weights[i], dtype=f32, out=w_out)
        elif self.small:  # on accelerators one foreach kernel (one launch each costs more)
            s = self.small_start
            for src, buf in ((grads, self.g), (weights, self.w)):
                norms = torch._foreach_norm([src[i] for i in self.small], 2, dtype=f32)
                torch.stack(norms, out=buf[s:])
        # factor = min(1, clipping * max(||w||, eps) / ||g||), four kernels: 1 for a unit within
        # its limit (and for ||g|| = 0: x/0 = inf); a non-finite ||g|| (inf -> 0 first) or ||w||
        # (inf/x = inf, nan/x = nan) gives 1 too -- fmin, unlike clamp, drops the NaN
        w_floor = torch.clamp(self.w, min=eps, out=self.w)
        torch.nan_to_num(self.g, nan=0.0, posinf=0.0, out=self.tmp)
        torch.addcdiv(self.zeros, w_floor, self.tmp, value=clipping, out=self.factor)
        torch.fmin(self.factor, self.one, out=self.factor)


class AGC(Clipper):
    """Clip each unit's gradient so that ``||g_i|| <= clipping * max(||w_i||, eps)``.

    A unit is a row of a weight (an output neuron or conv filter); a bias or gain is one
    unit. Units above the limit are rescaled to it, the others are untouched. The unit norms
    of all tensors are written into one preallocated flat buffer per device (kept between calls
    while the gradients' shapes stay the same), so the decision is a handful of kernels and the
    rescaling one foreach multiply; a unit whose gradient norm is not finite is left as it is.

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
        self._plan: tuple[Any, list[_DevicePlan]] | None = None  # (key, plans); not state

    def _plans(self, grads: list[torch.Tensor]) -> list[_DevicePlan]:
        key = tuple((g.shape, g.device) for g in grads)
        if self._plan is None or self._plan[0] != key:
            by_dev: dict[torch.device, list[int]] = defaultdict(list)
            for i, g in enumerate(grads):
                by_dev[g.device].append(i)
            self._plan = (key, [_DevicePlan(grads, idx) for idx in by_dev.values()])
        return self._plan[1]

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = [p for p in params if p.grad is not None]  # same order as grads
        plans = self._plans(grads)
        for plan in plans:
            plan.run(weights, grads, self.clipping, self.eps)
        if len(plans) == 1:
            (plan,) = plans
            torch._foreach_mul_(grads, plan.factor_views)  # broadcasts (out, 1, ...) per unit
            before = _vector_norm(plan.g)  # sum of unit norms^2 = global norm^2
            after = _vector_norm(plan.g * plan.factor) if self._monitor is not None else None
            return before, after
        dev0 = grads[0].device
        parts_b, parts_a = [], []
        for plan in plans:
            torch._foreach_mul_([grads[i] for i in plan.idx], plan.factor_views)
            parts_b.append(_vector_norm(plan.g).to(dev0))
            if self._monitor is not None:
                parts_a.append(_vector_norm(plan.g * plan.factor).to(dev0))
        before = _vector_norm(torch.stack(parts_b))
        after = _vector_norm(torch.stack(parts_a)) if parts_a else None
        return before, after

    def _config(self) -> dict[str, Any]:
        return {"clipping": self.clipping, "eps": self.eps}
