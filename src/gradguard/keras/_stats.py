"""Per-layer gradient statistics inside the compiled train step, with ``keras.ops`` only.

Every step costs two reductions per gradient (sum of squares, max |g|); everything else works on
the (V,) vectors of per-variable numbers. The weights' own statistics (their sum of squares and
the update's) are taken on detail steps only, inside an ``ops.cond``. Each function takes backend
tensors (traced under ``tf.function`` / ``jax.jit`` or eager) and returns tensors; nothing here
reads a value on the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["ROWS", "GSQ", "GMAX", "WSQ", "NONFINITE_ROW", "USQ", "grad_rows", "weight_rows"]
__all__ += ["no_weight_rows"]

# Rows of the per-step [rows, layers] block (the host turns them into metrics at flush).
GSQ, GMAX, WSQ, NONFINITE_ROW, USQ = range(5)  # sum g^2, max |g|, sum w^2, bad tensors, sum dw^2
ROWS = 5


def _per_layer(values: Any, mask: np.ndarray) -> tuple[Any, Any]:
    """Per-layer sums and maxima of per-variable numbers: ``values`` (K, V), ``mask`` (V, L)
    bool, True where variable v belongs to layer l. Returns two (K, L) tensors."""
    picked = ops.where(mask[None], ops.expand_dims(values, 2), ops.zeros((), values.dtype))
    return ops.sum(picked, axis=1), ops.max(picked, axis=1)


def _sumsqs(tensors: Sequence[Any]) -> Any:
    """(V,) sums of x^2. TensorFlow: its fused ``l2_loss`` kernel (one pass, no x^2 tensor; about
    20% less time than square then sum on the MLP of the benchmark), doubled once for all."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return 2 * ops.stack([tf.nn.l2_loss(x) for x in tensors])
    return ops.stack([ops.sum(ops.square(x)) for x in tensors])


def _materialized(tensors: Sequence[Any]) -> list[Any]:
    """JAX: the tensors behind an optimization barrier, so XLA reduces the gradients the step
    has already written instead of fusing the reductions into the ops that produce them (which
    recomputes those ops: +420 us a step on the benchmark's MLP against +0..120 us with the
    barrier). Elsewhere: the tensors."""
    if keras.backend.backend() == "jax":
        from jax import lax

        return list(lax.optimization_barrier(list(tensors)))
    return list(tensors)


def grad_rows(grads: Sequence[Any], mask: np.ndarray, dtype: str = "float32") -> Any:
    """Per-layer sum of g^2, max |g| and the count of non-finite gradients: (3, L) in ``dtype``
    (float64 for a float64 model: squares of 1e-20 gradients underflow in float32).

    Args:
        grads: one dense gradient per variable (V tensors).
        mask: (V, L) bool, True where variable v belongs to layer l.
    """
    grads = _materialized(grads)
    grads = [ops.cast(g, dtype) for g in grads]
    sq = _sumsqs(grads)  # (V,)
    mx = ops.stack([ops.max(ops.abs(g)) for g in grads])  # (V,)
    # NaN anywhere makes the sum NaN; an Inf makes the max Inf (a huge finite gradient whose
    # square overflows is not counted); max |g| says NaN too, whatever the max kernel does
    nan = ops.isnan(sq)
    bad = ops.cast(ops.logical_or(nan, ops.isinf(mx)), dtype)
    sums, tops = _per_layer(ops.stack([sq, ops.where(nan, sq, mx), bad]), mask)
    return ops.stack([sums[0], tops[1], sums[2]])


def weight_rows(
    before: Sequence[Any], after: Sequence[Any], mask: np.ndarray, dtype: str = "float32"
) -> Any:
    """Per-layer sum of w^2 (before the update), sum of (w_after - w_before)^2 and the count of
    non-finite weights: (3, L) in ``dtype``."""
    ws, us = [], []
    for b, a in zip(before, after):
        b = ops.cast(b, dtype)
        ws.append(ops.sum(ops.square(b)))
        us.append(ops.sum(ops.square(ops.cast(a, dtype) - b)))
    wsq = ops.stack(ws)
    bad = ops.cast(ops.logical_not(ops.isfinite(wsq)), dtype)
    sums, _ = _per_layer(ops.stack([wsq, ops.stack(us), bad]), mask)
    return sums


def no_weight_rows(n_layers: int, dtype: str = "float32") -> Any:
    """What :func:`weight_rows` gives on a step that does not measure the weights: NaN sums,
    no non-finite weights counted."""
    nan = ops.full((n_layers,), math.nan, dtype)
    return ops.stack([nan, nan, ops.zeros((n_layers,), dtype)])
