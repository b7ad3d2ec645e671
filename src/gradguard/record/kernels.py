"""Sync-free norm kernels over lists of tensors, shared by the Monitor's probes and the clippers.

Everything here returns device tensors and never reads a value on the host.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

__all__ = [
    "sumsq",
    "max_abs",
    "sumsq_max_abs",
    "activation_sums",
    "group_by_device",
    "total_norm",
    "scale_",
]

_BLAS_DTYPES = (torch.float32, torch.float64)
# elements per chunk of the CPU one-read path: 1 MiB of fp32, well inside a core's L2, so the max
# kernel reads from cache what the sum-of-squares kernel just brought in from memory
_CHUNK = 1 << 18


def _blas_ready(tensors: list[torch.Tensor]) -> bool:
    return all(
        t.dtype in _BLAS_DTYPES and t.is_contiguous() and t.device.type == "cpu" for t in tensors
    )


def sumsq(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares of each tensor, stacked to float64 ``(P,)``.

    fp32/fp64 contiguous tensors go through ``vecdot`` (BLAS, vectorised and threaded: ~2x faster
    than ``_foreach_norm`` on CPU, same fp32-accumulation accuracy); others through ``_foreach_norm``
    accumulated in fp32 (fp16/bf16 would overflow).
    """
    if _blas_ready(tensors):
        flat = [t.view(-1) for t in tensors]
        return torch.stack([torch.linalg.vecdot(f, f) for f in flat]).to(torch.float64)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)  # type: ignore[call-arg]
    return torch.stack(norms).to(torch.float64).square()


def max_abs(tensors: list[torch.Tensor], fused: bool | None = None) -> torch.Tensor:
    """max |x| of each tensor, stacked to float64 ``(P,)``; NaN if a tensor holds NaN.

    ``_foreach_norm(ord=inf)`` takes a slow scalar path on CPU (10 ms on W1's 25 MB of grads, 8x a
    read), so take max(max(x), -min(x)) from one ``aminmax`` read per tensor.
    """
    if fused is None:
        fused = bool(tensors) and not all(t.device.type == "cpu" for t in tensors)
    if fused:
        # accelerators: one fused multi-tensor kernel (the scalar inf-norm path is a CPU problem);
        # it has no identity for empty tensors (uneven FSDP2 shards), which contribute 0
        full = [t for t in tensors if t.numel()]
        norms = iter(
            torch._foreach_norm(full, math.inf, dtype=torch.float32)  # type: ignore[call-arg]
            if full
            else []
        )
        zero = tensors[0].new_zeros((), dtype=torch.float32)  # a fill: no host-to-device copy
        return torch.stack([next(norms) if t.numel() else zero for t in tensors]).to(torch.float64)
    # an empty local shard (FSDP2 splits unevenly) has no max: it contributes 0
    lo_hi = [torch.aminmax(t.reshape(-1)) if t.numel() else (t.new_zeros(()),) * 2 for t in tensors]
    lo = torch.stack([m[0] for m in lo_hi]).to(torch.float64)
    hi = torch.stack([m[1] for m in lo_hi]).to(torch.float64)
    both = torch.stack([hi, lo.neg()])
    return torch.where(both.isnan().any(0), math.nan, both.amax(0))


def sumsq_max_abs(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squares and max |x| of each tensor, float64 ``(P,)`` each, reading memory once.

    max |x| is NaN where the tensor holds a NaN (whatever the max kernel does with NaN). On CPU,
    for fp32/fp64 contiguous tensors, each chunk of ``_CHUNK`` elements goes through ``vecdot``
    and then ``aminmax`` back to back: the second kernel finds the chunk in cache, so the gradient
    bytes cross the memory bus once (torch has no single CPU kernel for both; a
    ``torch.compile``-fused one measured 1.5-2x slower here: docs/benchmarks.md). Elsewhere: the
    two fused multi-tensor kernels of :func:`sumsq` and :func:`max_abs`.
    """
    if not (tensors and _blas_ready(tensors)):
        sq = sumsq(tensors)
        return sq, torch.where(sq.isnan(), math.nan, max_abs(tensors))
    sq_parts: list[torch.Tensor] = []
    lo_parts: list[torch.Tensor] = []
    hi_parts: list[torch.Tensor] = []
    for t in tensors:
        f = t.view(-1)
        if f.numel() == 0:  # an empty local shard (FSDP2 splits unevenly) contributes 0
            zero = f.new_zeros(())
            sq_parts.append(zero)
            lo_parts.append(zero)
            hi_parts.append(zero)
        elif f.numel() <= _CHUNK:
            sq_parts.append(torch.linalg.vecdot(f, f))
            lo, hi = torch.aminmax(f)
            lo_parts.append(lo)
            hi_parts.append(hi)
        else:
            sqs, los, his = [], [], []
            for c in f.split(_CHUNK):
                sqs.append(torch.linalg.vecdot(c, c))
                lo, hi = torch.aminmax(c)
                los.append(lo)
                his.append(hi)
            sq_parts.append(torch.stack(sqs).sum())
            lo_parts.append(torch.stack(los).amin())
            hi_parts.append(torch.stack(his).amax())
    sq = torch.stack(sq_parts).to(torch.float64)
    lo_hi = torch.stack([torch.stack(hi_parts), torch.stack(lo_parts).neg()]).to(torch.float64)
    mx = torch.where(lo_hi.isnan().any(0) | sq.isnan(), math.nan, lo_hi.amax(0))
    return sq, mx


def activation_sums(y: torch.Tensor, sat_band: tuple[float, float] | None) -> torch.Tensor:
    """``[sum, sum of squares, zeros, saturated]`` of ``y`` as float64 ``(4,)``, on ``y``'s device.

    Moments come from sums and sums of squares (``torch.std_mean`` measured 12-35x slower on CPU);
    each statistic is one pass over ``y``, with no host read and no host-to-device copy.
    ``sat_band`` is ``(low, high)``: values at or beyond either count as saturated (None: not a
    bounded activation, saturated = 0).
    """
    # fp32 sums are cascaded (relative error ~1e-7 of the sum of |y|); sum(dtype=float64)
    # converts a copy of y first on CPU, which costs more than every other statistic together
    s1 = (y.sum() if y.dtype == torch.float32 else y.sum(dtype=torch.float64)).to(torch.float64)
    s2 = sumsq([y])[0]
    n = y.numel()
    if sat_band is not None:
        # tanh/sigmoid-like outputs are almost never 0: count_nonzero is one fast pass there
        zeros = n - torch.count_nonzero(y).to(torch.float64)
        lo, hi = sat_band
        # at or beyond either end of the band: |y - middle| >= half its width
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        dist = y.abs() if mid == 0 else (y - mid).abs_()
        sat = torch.count_nonzero(dist >= half).to(torch.float64)
    else:
        # nonzeros as a sum of |sign(y)|: count_nonzero branches on every element on CPU
        # (7x slower on a ReLU output that is half zeros)
        zeros = n - y.sign().abs_().sum(dtype=torch.float64)
        sat = s1.new_zeros(())
    # sign(NaN) is 0 on CPU: a NaN output would count as a zero (a "dead unit"); any NaN makes
    # the sum NaN, so the zero count is unknown then, not a measurement -- no extra pass
    zeros = torch.where(s1.isnan(), math.nan, zeros)
    return torch.stack([s1, s2, zeros, sat])


def group_by_device(tensors: list[torch.Tensor]) -> dict[torch.device, list[torch.Tensor]]:
    """Split ``tensors`` by device, keeping order inside each group (foreach needs one device)."""
    groups: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        groups[t.device].append(t)
    return groups


def total_norm(grads: list[torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
    """L2 norm of all ``grads`` taken together, accumulated in float32 (fp16 cannot overflow).

    Args:
        grads: gradient tensors (any float dtype, any devices).
        device: where the result lives; defaults to the first gradient's device.

    Returns:
        0-d float32 tensor; ``tensor(0.)`` when ``grads`` is empty.
    """
    if not grads:
        return torch.zeros((), dtype=torch.float32, device=device)
    out_device = device if device is not None else grads[0].device
    norms: list[torch.Tensor] = []
    for dev_grads in group_by_device(grads).values():
        # one foreach kernel per device: (n_tensors,) norms in float32
        norms.extend(torch._foreach_norm(dev_grads, 2, dtype=torch.float32))
    return torch.linalg.vector_norm(torch.stack([n.to(out_device) for n in norms]))


def scale_(grads: list[torch.Tensor], factor: torch.Tensor) -> None:
    """Multiply every gradient in place by the 0-d tensor ``factor`` (no host read)."""
    for dev, dev_grads in group_by_device(grads).items():
        torch._foreach_mul_(dev_grads, factor.to(dev))
