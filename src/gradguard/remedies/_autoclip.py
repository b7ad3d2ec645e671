"""AutoClip (Seetharaman et al. 2020): clip at a percentile of the gradient-norm history."""

from __future__ import annotations

from typing import Any

import torch

from gradguard.record.kernels import scale_, total_norm
from gradguard.remedies._checks import check_number
from gradguard.remedies._clipper import Clipper, norm_factor

__all__ = ["AutoClip"]


class AutoClip(Clipper):
    """Clip the global gradient norm at the ``percentile``-th percentile of past norms.

    Each call appends the current norm to a ring buffer of the last ``history`` finite norms
    (a preallocated tensor on the gradients' device), then clips at
    ``nanquantile(buffer, percentile / 100)`` (linear interpolation, as ``numpy.percentile``).
    The paper keeps the whole history; a window keeps the cost per step bounded.
    A non-finite norm is not written into the buffer and leaves the gradients untouched.

    Args:
        percentile: which percentile of the history to clip at, in (0, 100].
        history: how many past norms to keep (>= 1).

    >>> clipper = AutoClip(percentile=10)
    """

    def __init__(self, percentile: float = 10.0, history: int = 1000) -> None:
        super().__init__()
        self.percentile = check_number("percentile", percentile, low=0.0, high=100.0)
        self.history = int(
            check_number("history", history, low=1, high=2**24, low_inclusive=True, integer=True)
        )
        self._buf: torch.Tensor | None = None  # (history,) float32, NaN = empty slot
        self._pos: torch.Tensor | None = None  # (1,) int64, next slot to write

    def _state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._buf is None or self._pos is None:
            self._buf = torch.full((self.history,), float("nan"), device=device)
            self._pos = torch.zeros(1, dtype=torch.int64, device=device)
        elif self._buf.device != device:
            self._buf, self._pos = self._buf.to(device), self._pos.to(device)
        return self._buf, self._pos

    @property
    def norms(self) -> torch.Tensor:
        """The finite norms seen so far (up to ``history``), oldest slot first. Reads the device."""
        if self._buf is None:
            return torch.zeros(0)
        return self._buf[~torch.isnan(self._buf)].clone()

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        norm = total_norm(grads)
        buf, pos = self._state(norm.device)
        finite = torch.isfinite(norm)
        # write the norm at `pos` only if it is finite; otherwise write back the old value
        old = buf.index_select(0, pos)
        buf.index_copy_(0, pos, torch.where(finite, norm.reshape(1), old))
        pos.add_(finite.to(torch.int64)).remainder_(self.history)
        threshold = torch.nanquantile(buf, self.percentile / 100.0)
        factor = norm_factor(norm, threshold)
        scale_(grads, factor)
        return norm, norm * factor

    def _config(self) -> dict[str, Any]:
        return {"percentile": self.percentile, "history": self.history}
