"""What the Guard records when it refuses a step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradguard.remedies.locate import NonfiniteLocation

__all__ = ["GuardEvent"]


@dataclass(frozen=True)
class GuardEvent:
    """One skipped optimizer step."""

    step: int  # index of the guard.step() call (0-based)
    kind: str  # "nonfinite_loss", "nonfinite_grad", "grad_spike" or "loss_spike" (warm-up)
    message: str  # one readable line
    grad_norm: float  # global gradient L2 norm (may be nan/inf)
    z: float | None  # robust z-score of the norm (spikes only)
    loss: float | None  # the loss, if one was passed
    layer: str | None  # first module (registration order) with a non-finite gradient
    rolled_back: bool  # parameters and optimizer state restored from the last snapshot
    lr: tuple[float, ...] | None  # learning rates after the backoff (None: not backed off)
    location: NonfiniteLocation | None = None  # from locate_nonfinite, first non-finite event only

    def __str__(self) -> str:
        out = f"step {self.step}: skipped ({self.kind}) — {self.message}"
        if self.rolled_back:
            out += "; rolled back"
        if self.lr is not None:
            out += f"; lr now {', '.join(f'{x:.3g}' for x in self.lr)}"
        if self.location is not None:
            out += "\n" + str(self.location)
        return out

    def to_data(self) -> dict[str, Any]:
        """JSON-friendly fields for ``Monitor.event(data=...)``."""

        def num(x: float | None) -> float | str | None:
            return x if x is None or math.isfinite(x) else str(x)

        return {
            "reason": self.kind,
            "guard_step": self.step,
            "grad_norm": num(self.grad_norm),
            "z": num(self.z),
            "loss": num(self.loss),
            "rolled_back": self.rolled_back,
            "lr": list(self.lr) if self.lr is not None else None,
            "location": str(self.location) if self.location is not None else None,
        }
