"""Activation statistics of a Keras model on detail steps, inside the compiled train step.

A second, inference-mode forward pass of the step's batch through a functional view of the model
whose outputs are the recorded layers' activations (``keras.Model(model.inputs, outputs)``, the
same weights), run only when the step is a detail step (``ops.cond``). Subclassed models, which
have no symbolic graph, get no activation statistics.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from gradguard.keras._layers import KerasLayers
from gradguard.model.activations import kind_of, saturation_tolerance

__all__ = ["ACT_ROWS", "ActivationProbe", "probe_for"]

ACT_ROWS = 4  # mean, std, fraction == 0, fraction within 1% of a bounded activation's bounds


class ActivationProbe:
    """Computes the (ACT_ROWS, L) activation rows of one batch."""

    def __init__(self, view: keras.Model, columns: list[int], n_layers: int, table: KerasLayers):
        self.view = view  # outputs: the activations of `columns`
        self.columns = columns
        self.n_layers = n_layers
        self.thresholds: list[tuple[float, float] | None] = []
        for col in columns:
            kind = kind_of(table.layers[col].activation)
            bounds = None if kind is None else kind.bounds
            finite = bounds is not None and all(math.isfinite(b) for b in bounds)
            self.thresholds.append(saturation_tolerance(bounds) if finite and bounds else None)

    def rows(self, x: Any) -> Any:
        """Per-layer mean, std, zero fraction and saturated fraction (NaN: not measured)."""
        outs = self.view(x, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        nan = ops.full((), math.nan, "float32")
        per_col: dict[int, Any] = {}
        for col, y, thr in zip(self.columns, outs, self.thresholds):
            y = ops.cast(y, "float32")
            zero = ops.mean(ops.cast(ops.equal(y, 0.0), "float32"))
            if thr is None:
                sat = nan
            else:
                out = ops.logical_or(ops.less_equal(y, thr[0]), ops.greater_equal(y, thr[1]))
                sat = ops.mean(ops.cast(out, "float32"))
            per_col[col] = ops.stack([ops.mean(y), ops.std(y), zero, sat])
        missing = ops.full((ACT_ROWS,), math.nan, "float32")
        return ops.stack([per_col.get(c, missing) for c in range(self.n_layers)], axis=1)


def probe_for(model: keras.Model, table: KerasLayers) -> ActivationProbe | None:
    """The probe of a Sequential or functional model; None for a subclassed one."""
    try:
        inputs = model.inputs
        pairs = [(c, lay.output) for c, lay in enumerate(table.outputs) if lay is not None]
        if not inputs or not pairs:
            return None
        # one input: the tensor itself, so that calling the view with a tensor matches its structure
        view = keras.Model(inputs[0] if len(inputs) == 1 else inputs, [out for _, out in pairs])
    except (AttributeError, ValueError, TypeError):  # no symbolic graph: a subclassed model
        return None
    return ActivationProbe(view, [c for c, _ in pairs], len(table.layers), table)
