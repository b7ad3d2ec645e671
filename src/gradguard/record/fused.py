"""A ``torch.compile``-fused kernel for the gradient statistics, used where it measures faster.

Sum of squares and max |g| of every gradient are two reductions per tensor; compiled, they can run
as one pass per tensor. Whether that pays depends on the device: on this project's 2-core CPU the
compiled kernel took 1.7 ms against 1.0 ms for the eager chunked path on W1's 24 MiB of gradients,
after 3-15 s of compiling (docs/benchmarks.md), so ``"auto"`` uses the eager path on CPU without
compiling anything. On an accelerator ``"auto"`` compiles once at the first flush (where the host
waits for the device anyway), times both paths on the gradients of that step, keeps the faster,
and says which in a ``kernel`` event; a compile that fails leaves the eager path in place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from gradguard.errors import ConfigError
from gradguard.record.kernels import sumsq_max_abs

__all__ = ["StatsKernel", "KERNELS", "KERNEL_EVENT"]

KERNELS = ("auto", "eager", "compiled")
KERNEL_EVENT = "kernel"  # the event that says which path "auto" chose

Stats = Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


def _fused(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """What torch.compile fuses: one reduction pass per tensor for both statistics."""
    sq, mx = [], []
    for t in tensors:
        f = t.reshape(-1).float()
        sq.append((f * f).sum())
        mx.append(f.abs().amax())
    return torch.stack(sq).to(torch.float64), torch.stack(mx).to(torch.float64)


class StatsKernel:
    """``(sum of squares, max |g|)`` of a list of gradients, by the eager or the compiled path.

    Args:
        mode: "eager", "compiled" (always the compiled kernel), or "auto" (see the module doc).
        measure_on_cpu: let "auto" compile and time both paths on CPU too (benchmarks, tests).
    """

    def __init__(self, mode: str = "auto", *, measure_on_cpu: bool = False) -> None:
        if mode not in KERNELS:
            raise ConfigError(f"stats_kernel must be one of {KERNELS}, got {mode!r}")
        self.mode = mode
        self.name = "eager"
        self._compiled: Stats | None = None
        self.decided = mode == "eager"
        self.timings: dict[str, float] = {}
        self.measure_on_cpu = measure_on_cpu

    def __call__(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            self.name == "compiled"
            and self._compiled is not None
            and all(t.numel() for t in tensors)
        ):
            sq, mx = self._compiled(tensors)
            return sq, torch.where(sq.isnan(), math.nan, mx)
        if self.mode == "compiled" and not self.decided:
            self.decide(tensors)
            return self(tensors)
        return sumsq_max_abs(tensors)

    def decide(self, tensors: list[torch.Tensor]) -> dict[str, Any] | None:
        """Choose the path once (at a flush): returns what was chosen and why, for an event,
        or None when nothing was to decide."""
        if self.decided or not tensors:
            return None
        self.decided = True
        on_cpu = all(t.device.type == "cpu" for t in tensors)
        if self.mode == "auto" and on_cpu and not self.measure_on_cpu:
            return None  # measured: compiling does not pay on CPU (module doc)
        try:
            self._compiled = torch.compile(_fused, dynamic=False)
            t0 = time.perf_counter()
            self._compiled(tensors)
            compile_s = time.perf_counter() - t0
        except Exception as e:  # no compiler, unsupported backend: the eager path stays
            self._compiled = None
            return {"kernel": "eager", "reason": f"torch.compile failed: {e}"[:300]}
        if self.mode == "compiled":
            self.name = "compiled"
            return {"kernel": "compiled", "compile_s": compile_s}
        self.timings = {
            "eager": _time(sumsq_max_abs, tensors),
            "compiled": _time(self._compiled, tensors),
        }
        self.name = min(self.timings, key=self.timings.__getitem__)
        return {"kernel": self.name, "compile_s": compile_s, "seconds": dict(self.timings)}


def _time(fn: Stats, tensors: list[torch.Tensor], reps: int = 5) -> float:
    """Median seconds of ``fn`` on ``tensors``, the device synchronised around each call."""
    dev = tensors[0].device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda *a: None)
    fn(tensors)
    out = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn(tensors)
        sync(dev)
        out.append(time.perf_counter() - t0)
    return sorted(out)[reps // 2]
