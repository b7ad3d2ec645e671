"""Per-layer gradient statistics inside the compiled train step, with ``keras.ops`` only.

Each function takes backend tensors (traced under ``tf.function`` / ``jax.jit`` or eager) and
returns tensors; nothing here reads a value on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

__all__ = ["ROWS", "GSQ", "GMAX", "WSQ", "NONFINITE_ROW", "USQ", "layer_rows", "update_row"]

# Rows of the per-step [rows, layers] block (the host turns them into metrics at flush).
GSQ, GMAX, WSQ, NONFINITE_ROW, USQ = range(5)  # sum g^2, max |g|, sum w^2, bad tensors, sum dw^2
ROWS = 5


def _segment(values: Any, mask: np.ndarray, reduce: str) -> Any:
    """Per-layer sum or max of per-variable scalars: ``values`` (V,), ``mask`` (V, L) bool."""
    picked = ops.where(mask, ops.expand_dims(values, 1), ops.zeros_like(values)[:1, None])
    return ops.sum(picked, axis=0) if reduce == "sum" else ops.max(picked, axis=0)


def layer_rows(
    grads: Sequence[Any], weights: Sequence[Any], mask: np.ndarray, dtype: str = "float32"
) -> Any:
    """The rows GSQ..NONFINITE_ROW (USQ left at 0) for one step: (ROWS, L) in ``dtype``
    (float64 for a float64 model: squares of 1e-20 gradients underflow in float32).

    Args:
        grads: one dense gradient per variable (V tensors).
        weights: the variables' values before the update, same order.
        mask: (V, L) bool, True where variable v belongs to layer l.
    """
    gsq, gmax, wsq, bad = [], [], [], []
    for g, w in zip(grads, weights):
        g = ops.cast(g, dtype)
        w = ops.cast(w, dtype)
        sq = ops.sum(ops.square(g))
        mx = ops.max(ops.abs(g))
        ws = ops.sum(ops.square(w))
        # NaN anywhere makes the sum NaN; an Inf makes the max Inf (a huge finite gradient whose
        # square overflows is not counted); a non-finite weight makes its sum non-finite.
        g_bad = ops.logical_or(ops.isnan(sq), ops.isinf(mx))
        gsq.append(sq)
        gmax.append(ops.where(ops.isnan(sq), sq, mx))
        wsq.append(ws)
        bad.append(ops.cast(g_bad, dtype) + ops.cast(ops.logical_not(ops.isfinite(ws)), dtype))
    zeros = ops.zeros((mask.shape[1],), dtype)
    return ops.stack(
        [
            _segment(ops.stack(gsq), mask, "sum"),
            _segment(ops.stack(gmax), mask, "max"),
            _segment(ops.stack(wsq), mask, "sum"),
            _segment(ops.stack(bad), mask, "sum"),
            zeros,
        ]
    )


def update_row(
    before: Sequence[Any], after: Sequence[Any], mask: np.ndarray, dtype: str = "float32"
) -> Any:
    """Per-layer sum of (w_after - w_before)^2: (L,) in ``dtype``."""
    usq = [
        ops.sum(ops.square(ops.cast(a, dtype) - ops.cast(b, dtype))) for b, a in zip(before, after)
    ]
    return _segment(ops.stack(usq), mask, "sum")
