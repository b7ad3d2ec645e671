"""Combining per-layer statistics across processes with torch.distributed (DDP and FSDP2).

The Monitor takes gradient statistics in the optimizer's step pre-hook, after DDP's all-reduce of
the gradients, so under DDP (and with ``no_sync`` accumulation) there is one record per optimizer
step, taken from the final gradients. Each ``reduce`` call costs one ``all_reduce(SUM)`` and, when
there are maxima, one ``all_reduce(MAX)``; no value is read on the host. A recorded step makes one call
(gradient statistics: SUM + MAX); a detail step two more (update ratio: SUM; activations: SUM).

Replicated and sharded parameters need different arithmetic:

- DDP: every rank holds the whole parameter and, after the all-reduce, the same gradient. Summing
  squared norms across ranks would count each one ``world_size`` times, so the sum is divided by the
  number of copies (the world size).
- FSDP2 (``fully_shard``): parameters and gradients are DTensors and each rank holds one shard. The
  squared norm of the whole is the sum of the shards' squared norms; maxima are maxed; non-finite
  counts summed.

Both are one rule: sum over ranks, then divide by how many ranks hold the same piece (the parameter's
replication factor: ``world_size / number of distinct shards``, read from the DTensor placements; a
plain tensor has one shard). Non-finite counts are maxed, not summed: a tensor with NaN on several
ranks (or in several shards) is one tensor. Activation statistics come from each rank's own data and
are summed; the squared activation gradients are divided by ``world_size**2`` besides, because DDP and
FSDP2 *average* the gradients over ranks: the gradient of the global (mean) loss with respect to a
rank's activations is ``1 / world_size`` times that of the rank's own loss.

Each probe says how each of its rows combines (:class:`Combine`), so the reducer never needs to
know a probe's layout.

Every rank makes the same collective calls in the same order whatever the values are (nothing is
branched on a tensor value before a collective), so ranks that see different NaN/Inf do not deadlock.

>>> mon = gg.watch(ddp_model.module, optimizer)   # doctest: +SKIP  (picks DistributedReducer itself)
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist

from gradguard.errors import GradguardError
from gradguard.model.layers import LayerInfo

__all__ = [
    "Combine",
    "Reducer",
    "LocalReducer",
    "DistributedReducer",
    "default_reducer",
    "replication_factor",
]

log = logging.getLogger("gradguard")


class Combine(enum.Enum):
    """How one row of per-layer numbers combines across ranks."""

    SUM = "sum"  # each rank's own data (activation moments, counts): summed
    PARAM_SUM = (
        "param_sum"  # of parameters or their gradients: summed, / ranks holding the same piece
    )
    MEAN_GRAD_SQ = (
        "mean_grad_sq"  # squared gradients of a rank's own activations: summed, / world**2
    )
    MAX = "max"  # maxima and non-finite counts: maxed (NaN-preserving)


class Reducer(Protocol):
    """Where per-layer numbers of a step are combined across processes (DDP/FSDP plug in here)."""

    @property
    def is_writer(self) -> bool:
        """Only this process writes the store and feeds sinks (rank 0 under torch.distributed)."""
        ...

    def bind(self, layers: Sequence[LayerInfo]) -> None:
        """Learn the watched layers (a distributed reducer reads how their parameters are sharded)."""
        ...

    def reduce(self, rows: torch.Tensor, how: Sequence[Combine]) -> torch.Tensor:
        """Combine float64 ``rows`` ``[k, L]`` across ranks, row ``i`` as ``how[i]`` says."""
        ...

    def agree(self, values: Sequence[float]) -> list[float]:
        """The mean of ``values`` over the ranks, the same on every rank (host numbers: the overhead
        budget's cost estimates, so that every rank picks the same schedule). A collective: every
        rank calls it at the same point."""
        ...


class LocalReducer:
    """One process (or each rank keeps its own numbers): nothing to combine."""

    is_writer = True

    def bind(self, layers: Sequence[LayerInfo]) -> None:
        """Nothing to learn for one process."""

    def reduce(self, rows: torch.Tensor, how: Sequence[Combine]) -> torch.Tensor:
        return rows

    def agree(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in values]


def default_reducer() -> Reducer:
    """The torch.distributed reducer when a process group with several ranks is up, else the no-op."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistributedReducer()
    return LocalReducer()


def replication_factor(param: torch.Tensor, world_size: int) -> int:
    """How many ranks of a group of ``world_size`` hold the same piece of ``param``.

    Args:
        param: a parameter: a plain tensor (replicated, as under DDP) or a DTensor (FSDP2).
        world_size: ranks in the group the statistics are reduced over.

    Returns:
        ``world_size`` for a plain tensor; ``world_size / shards`` for a DTensor, where ``shards`` is
        the product of the mesh sizes along the dimensions it is sharded over.

    >>> replication_factor(torch.zeros(3), 4)
    4
    """
    placements = getattr(param, "placements", None)
    mesh = getattr(param, "device_mesh", None)
    if placements is None or mesh is None:
        return world_size
    shards = 1
    for dim, placement in enumerate(placements):
        if placement.is_shard():
            shards *= mesh.size(dim)
    return max(world_size // shards, 1)


@dataclass
class DistributedReducer:
    """A Monitor reducer over a torch.distributed process group (gloo, NCCL, ...).

    Args:
        group: the process group (default: the world).

    ``gg.watch`` uses one by itself when torch.distributed is initialised with more than one rank.
    Only rank 0 of the group writes the store and feeds sinks (``is_writer``); every rank keeps
    the same reduced numbers in ``mon.run``.
    """

    group: Any = None
    # (L,) how many ranks hold the same piece of each layer
    _factor: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise GradguardError(
                "DistributedReducer needs an initialised process group; call "
                "torch.distributed.init_process_group(...) first, or use no reducer for one process"
            )

    @property
    def world_size(self) -> int:
        return int(dist.get_world_size(self.group))

    @property
    def is_writer(self) -> bool:
        return int(dist.get_rank(self.group)) == 0

    def bind(self, layers: Sequence[LayerInfo]) -> None:
        """Read each layer's replication factor from its parameters (DTensor placements or none)."""
        world = self.world_size
        factors = []
        for lay in layers:
            per_param = {replication_factor(p, world) for _, p in lay.params}
            if len(per_param) > 1:
                log.warning(
                    "gradguard: layer %r mixes parameters sharded in different ways %s; its norms "
                    "use the largest replication factor",
                    lay.name,
                    sorted(per_param),
                )
            factors.append(float(max(per_param)) if per_param else 1.0)
        self._factor = torch.tensor(factors, dtype=torch.float64)

    def reduce(self, rows: torch.Tensor, how: Sequence[Combine]) -> torch.Tensor:
        """Combine ``rows`` over the group, each as ``how`` says, in at most two collectives.

        Args:
            rows: float64 ``[k, L]``.
            how: one :class:`Combine` per row.

        Returns:
            The combined ``[k, L]``; a maximum is NaN where any rank had NaN.
        """
        k, L = rows.shape
        if len(how) != k:
            raise GradguardError(
                f"reduce got {k} rows but {len(how)} combine rules; give one per row"
            )
        world = self.world_size
        is_max = [h is Combine.MAX for h in how]
        summed = [i for i in range(k) if not is_max[i]]
        maxed = [i for i in range(k) if is_max[i]]
        sums, maxes = rows[summed], rows[maxed]
        # NaN is carried as a count in the SUM, because MAX over NaN is not defined the same way on
        # every backend; -inf stands in for NaN in the MAX and NaN is put back afterwards.
        isnan = maxes.isnan()
        packed = torch.cat([sums, isnan.to(sums.dtype)]).contiguous()
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.group)
        out = torch.empty_like(rows)
        out_sums, nan_count = packed[: len(summed)], packed[len(summed) :]
        for j, i in enumerate(summed):
            if how[i] is Combine.PARAM_SUM:
                out[i] = out_sums[j] / self._factors(L, rows.device)
            elif how[i] is Combine.MEAN_GRAD_SQ:
                # DDP/FSDP2 average gradients over ranks: d(global mean loss)/d(h_r) = (1/W) d(L_r)/d(h_r),
                # so the squared norm over the global batch is sum_r |a_r|^2 / W^2.
                out[i] = out_sums[j] / float(world * world)
            else:
                out[i] = out_sums[j]
        # shapes, the same on every rank: not a branch on values
        if maxed:
            m = torch.where(isnan, -math.inf, maxes).contiguous()
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group)
            out[maxed] = torch.where(nan_count > 0, math.nan, m)
        return out

    def agree(self, values: Sequence[float]) -> list[float]:
        """The mean of ``values`` over the group, read back to the host: one small all_reduce (on
        the current CUDA device under NCCL, which reduces device tensors only). NaN stays NaN."""
        backend = str(dist.get_backend(self.group)).lower()
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if "nccl" in backend and torch.cuda.is_available()
            else torch.device("cpu")
        )
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return (t / self.world_size).tolist()

    def _factors(self, n_layers: int, device: torch.device) -> torch.Tensor:
        if self._factor is None or self._factor.shape[0] != n_layers:
            raise GradguardError(
                "DistributedReducer was not bound to the Monitor's layers; let the Monitor create "
                "it (gg.watch does) or pass it as reducer= so that the Monitor calls bind()"
            )
        if self._factor.device != device:
            self._factor = self._factor.to(device)
        return self._factor
