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

Every rank makes the same collective calls in the same order whatever the values are (nothing is
branched on a tensor value before a collective), so ranks that see different NaN/Inf do not deadlock.

>>> mon = gg.watch(ddp_model.module, optimizer)   # doctest: +SKIP  (picks DistributedReducer itself)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from gradguard.errors import GradguardError
from gradguard.model.layers import LayerInfo
from gradguard.record.monitor import _A_GRADSQ, Reducer

__all__ = ["DistributedReducer", "replication_factor"]

log = logging.getLogger("gradguard")


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
class DistributedReducer(Reducer):
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

    def bind(self, layers: list[LayerInfo]) -> None:
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

    def reduce(
        self, sums: torch.Tensor, maxes: torch.Tensor, *, kind: str = "params"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum ``sums`` and max ``maxes`` over the group (NaN-preserving), in at most two collectives.

        Args:
            sums: float64 ``[k, L]`` to be summed (squared norms, counts, activation moments).
            maxes: float64 ``[m, L]`` to be maxed (``m`` may be 0).
            kind: "params" divides each layer's sums by its replication factor; "activations"
                sums, and divides the squared activation gradients (row ``_A_GRADSQ``) by
                ``world_size**2`` (gradients are averaged over ranks).

        Returns:
            ``(sums, maxes)`` reduced; a maximum is NaN where any rank had NaN.
        """
        k, L = sums.shape
        world = self.world_size
        # NaN is carried as a count in the SUM, because MAX over NaN is not defined the same way on
        # every backend; -inf stands in for NaN in the MAX and NaN is put back afterwards.
        isnan = maxes.isnan()
        packed = torch.cat([sums, isnan.to(sums.dtype)]).contiguous()
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.group)
        out_sums, nan_count = packed[:k], packed[k:]
        if kind == "params":
            if self._factor is None or self._factor.shape[0] != L:
                raise GradguardError(
                    "DistributedReducer was not bound to the Monitor's layers; let the Monitor create "
                    "it (gg.watch does) or pass it as reducer= so that Monitor calls bind()"
                )
            if self._factor.device != sums.device:
                self._factor = self._factor.to(sums.device)
            out_sums = out_sums / self._factor
        elif kind == "activations" and k > _A_GRADSQ:
            # DDP/FSDP2 average gradients over ranks: d(global mean loss)/d(h_r) = (1/W) d(L_r)/d(h_r),
            # so the squared norm over the global batch is sum_r |a_r|^2 / W^2.
            out_sums = out_sums.clone()
            out_sums[_A_GRADSQ] /= float(world * world)
        # shapes, the same on every rank: not a branch on values
        if maxes.shape[0] == 0:
            return out_sums, maxes
        m = torch.where(isnan, -math.inf, maxes).contiguous()
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group)
        return out_sums, torch.where(nan_count > 0, math.nan, m)
