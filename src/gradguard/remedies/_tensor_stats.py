"""Shape, dtype and value range of a tensor, counting NaN and Inf apart (for reports)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TensorStats", "iter_tensors"]


@dataclass(frozen=True)
class TensorStats:
    """What a tensor held: min/max over its finite values, and how many NaN and Inf."""

    label: str  # e.g. "input 0", "output", "grad_output 0", "grad of weight"
    shape: tuple[int, ...]
    dtype: str
    min: float | None  # over finite values; None when there is none
    max: float | None
    n_nan: int
    n_inf: int

    @property
    def finite(self) -> bool:
        return self.n_nan == 0 and self.n_inf == 0

    @classmethod
    def of(cls, label: str, t: torch.Tensor) -> TensorStats:
        """Measure ``t`` (reads the device: meant for diagnosis, not the hot path)."""
        x = t.detach()
        if not (x.is_floating_point() or x.is_complex()):
            x = x.float()
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        good = x[torch.isfinite(x)].float() if x.numel() else x.float()
        lo = float(good.min()) if good.numel() else None
        hi = float(good.max()) if good.numel() else None
        return cls(label, tuple(t.shape), str(t.dtype).replace("torch.", ""), lo, hi, n_nan, n_inf)

    def __str__(self) -> str:
        rng = (
            "no finite value"
            if self.min is None
            else f"finite range [{self.min:.4g}, {self.max:.4g}]"
        )
        bad = f", {self.n_nan} NaN, {self.n_inf} Inf" if not self.finite else ""
        return f"{self.label}: {list(self.shape)} {self.dtype}, {rng}{bad}"


def iter_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, tensor) for every tensor inside nested tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from iter_tensors(item, f"{prefix} {i}" if len(obj) > 1 else prefix)
    elif isinstance(obj, dict):
        for k, item in obj.items():
            yield from iter_tensors(item, f"{prefix} {k}")
