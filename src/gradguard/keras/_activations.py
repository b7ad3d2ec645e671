"""Activation statistics of a Keras model on detail steps, inside the compiled train step.

A second, inference-mode forward pass of the step's batch through a functional view of the model
whose outputs are the recorded layers' activations (``keras.Model(model.inputs, outputs)``, the
same weights), run only when the step is a detail step (``ops.cond``). Subclassed models, which
have no symbolic graph, get no activation statistics.

With a compiled loss the same forward also computes the loss of the step's batch (``y`` and
``sample_weight`` from ``keras.utils.unpack_x_y_sample_weight``) from the model's output with the
compiled loss (``model._compile_loss``: the loss ``compute_loss`` starts from; ``model.losses``,
e.g. activity regularisers, are left out) and its gradient with respect to each recorded layer's
own output (:mod:`gradguard.keras._act_grads`): ``act_grad_norm``, ``||dL/dh||``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from gradguard.keras._act_grads import norm, shift_gradients
from gradguard.keras._layers import KerasLayers
from gradguard.metrics import ACT_GRAD_NORM
from gradguard.model.activations import kind_of, saturation_tolerance

__all__ = ["ACT_ROWS", "GRAD_PART", "ActivationProbe", "probe_for", "describe"]

# mean, std, fraction == 0, fraction within 1% of a bounded activation's bounds, ||dL/dh||
ACT_ROWS = 5


GRAD_PART = f"dL/dh ({ACT_GRAD_NORM})"  # the part's name in the monitor's failures
Guard = Callable[[str, Callable[[], Any]], Any]


def _unguarded(part: str, fn: Callable[[], Any]) -> Any:
    return fn()


class ActivationProbe:
    """Computes the (ACT_ROWS, L) activation rows of one batch."""

    def __init__(
        self,
        view: keras.Model,
        columns: list[int],
        n_layers: int,
        table: KerasLayers,
        loss: Any = None,
        why_no_loss: str = "",
    ):
        self.view = view  # outputs: the activations of `columns` (then the model's, with a loss)
        self.columns = columns
        self.n_layers = n_layers
        self.loss = loss  # the compiled loss, or None: no dL/dh
        self.why_no_loss = why_no_loss
        # column -> the layer owning its weights: dL/dh is taken at that layer's own output; a
        # layer called at several places of the graph has no one h (its column gets NaN)
        self.units = {
            c: unit
            for c in columns
            if (unit := table.units[c]) is not None
            and len(getattr(unit, "_inbound_nodes", ())) <= 1
        }
        self.thresholds: list[tuple[float, float] | None] = []
        for col in columns:
            kind = kind_of(table.layers[col].activation)
            bounds = None if kind is None else kind.bounds
            finite = bounds is not None and all(math.isfinite(b) for b in bounds)
            self.thresholds.append(saturation_tolerance(bounds) if finite and bounds else None)

    def rows(self, data: Any, guard: Guard = _unguarded) -> Any:
        """Per-layer mean, std, zero fraction, saturated fraction and ||dL/dh|| of the batch
        ``data`` (what ``train_step`` gets; NaN: not measured). ``guard(part, fn)`` runs the
        dL/dh part (None: it failed, the statistics are taken without it)."""
        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        nan = ops.full((), math.nan, "float32")
        grads: dict[int, Any] = {}
        got = None
        if self.loss is not None and y is not None and not keras.tree.is_nested(y):

            def forward() -> tuple[Any, Any]:
                outs = _listed(self.view(x, training=False))
                return self.loss(y, outs[-1], weight), outs[:-1]

            got = guard(GRAD_PART, lambda: shift_gradients(self.units, forward))
        if got is not None:
            outs, grads = got
        else:  # no loss, no targets (or several), or dL/dh failed
            outs = _listed(self.view(x, training=False))
            outs = outs[:-1] if self.loss is not None else outs
        per_col: dict[int, Any] = {}
        for col, y, thr in zip(self.columns, outs, self.thresholds):
            y = ops.cast(y, "float32")
            zero = ops.mean(ops.cast(ops.equal(y, 0.0), "float32"))
            if thr is None:
                sat = nan
            else:
                out = ops.logical_or(ops.less_equal(y, thr[0]), ops.greater_equal(y, thr[1]))
                sat = ops.mean(ops.cast(out, "float32"))
            g = grads.get(col)
            gnorm = nan if g is None else norm(g)
            per_col[col] = ops.stack([ops.mean(y), ops.std(y), zero, sat, gnorm])
        missing = ops.full((ACT_ROWS,), math.nan, "float32")
        return ops.stack([per_col.get(c, missing) for c in range(self.n_layers)], axis=1)


def _listed(outs: Any) -> list[Any]:
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _loss_of(model: keras.Model) -> tuple[Any, str]:
    """(the compiled loss, "") when dL/dh can be taken from it, else (None, why not)."""
    loss = getattr(model, "_compile_loss", None)
    if loss is None:
        return None, "not recorded (no compiled loss)"
    if type(model).compute_loss is not keras.Model.compute_loss:
        return None, "not recorded (compute_loss is overridden: the compiled loss is not the loss)"
    if len(model.outputs) != 1:
        return None, "not recorded (a model with several outputs)"
    return loss, ""


def probe_for(model: keras.Model, table: KerasLayers) -> ActivationProbe | None:
    """The probe of a Sequential or functional model; None for a subclassed one."""
    try:
        inputs = model.inputs
        pairs = [(c, lay.output) for c, lay in enumerate(table.outputs) if lay is not None]
        if not inputs or not pairs:
            return None
        loss, why = _loss_of(model)
        outs = [out for _, out in pairs] + (list(model.outputs) if loss is not None else [])
        # one input: the tensor itself, so that calling the view with a tensor matches its structure
        view = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outs)
    except (AttributeError, ValueError, TypeError):  # no symbolic graph: a subclassed model
        return None
    return ActivationProbe(view, [c for c, _ in pairs], len(table.layers), table, loss, why)


def describe(probe: ActivationProbe | None) -> dict[str, str]:
    """What the run's config says about the activation statistics and dL/dh."""
    if probe is None:
        return {"activations": "not recorded (subclassed model)", ACT_GRAD_NORM: "not recorded"}
    how = "dL/d(layer output) of the compiled loss, same forward, detail steps"
    return {
        "activations": "inference-mode forward of the step's batch on detail steps",
        ACT_GRAD_NORM: how if probe.loss is not None else probe.why_no_loss,
    }
