"""The update ratio of a detail step: ||w_after - w_before|| / ||w_before|| per layer.

The weights are copied right before the optimizer's update (one device copy, reused across detail
steps) and compared right after it; nothing is read on the host.
"""

from __future__ import annotations

import torch

from gradguard.metrics import UPDATE_RATIO, WEIGHT_NORM
from gradguard.record.buffer import StepBuffer
from gradguard.record.kernels import sumsq
from gradguard.record.probes.grads import GradientProbe
from gradguard.record.reduce import Combine

__all__ = ["UpdateProbe"]


class UpdateProbe:
    """Snapshots the weights before a step and writes update_ratio after it.

    Args:
        grads: the gradient probe of the same Monitor (its parameter list and layer columns).
    """

    def __init__(self, grads: GradientProbe) -> None:
        self.grads = grads
        self.before: list[torch.Tensor] | None = None  # the weights before the step

    def snapshot(self) -> None:
        weights = self.grads.weights()
        if self.before is None:
            self.before = [w.clone() for w in weights]
        else:
            torch._foreach_copy_(self.before, weights)

    def measure(self, buffer: StepBuffer, slot: int, *, snapshot_at_grads: bool) -> None:
        """Compare the weights now with the snapshot; write update_ratio into ``slot``.

        ``snapshot_at_grads``: the snapshot was taken when the gradient probe measured this step
        (optimizer pre-step hook), so its weight_norm is ``||w_before||``.
        """
        assert self.before is not None, "snapshot() comes first"
        g = self.grads
        # ||w_before|| is this step's weight_norm when the gradient probe took it right before the
        # update (the same weights the snapshot holds): one pass over the weights fewer
        reuse = snapshot_at_grads and buffer.holds(slot, WEIGHT_NORM.group)
        before_sq = None if reuse else sumsq(self.before)
        torch._foreach_sub_(self.before, g.weights())  # in place: before <- before - after
        diff_sq = sumsq(self.before)
        rows = torch.zeros((1 if reuse else 2, g.n_layers), dtype=torch.float64, device=g.device)
        rows[0].index_add_(0, g.column, diff_sq)
        if before_sq is not None:
            rows[1].index_add_(0, g.column, before_sq)
        rows = g.reducer.reduce(rows, (Combine.PARAM_SUM,) * rows.shape[0])
        before = buffer.read(slot, WEIGHT_NORM) if reuse else rows[1].sqrt()
        buffer.write(slot, UPDATE_RATIO, rows[0].sqrt() / before)

    def release(self) -> None:
        self.before = None
