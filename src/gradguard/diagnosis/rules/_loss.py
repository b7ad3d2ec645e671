"""The loss series as the loss rules see it: finite points in step order, and their fifths."""

from __future__ import annotations

import numpy as np

from gradguard.diagnosis.view import RunView
from gradguard.metrics import LOSS

__all__ = ["finite_loss", "fifths"]


def finite_loss(view: RunView) -> tuple[np.ndarray, np.ndarray]:
    steps, loss = view.scalar(LOSS)
    ok = np.isfinite(loss)
    return steps[ok], loss[ok]


def fifths(loss: np.ndarray) -> tuple[float, float]:
    """Median of the first fifth and of the last fifth (at least 2 points each)."""
    k = max(2, len(loss) // 5)
    return float(np.median(loss[:k])), float(np.median(loss[-k:]))
