"""``gradguard.keras.check``: the preflight check of a Keras model at its current weights.

One inference-mode forward and backward pass on an example batch, with the backend's own autodiff
(``tf.GradientTape``, ``jax.value_and_grad`` or torch autograd). Per recorded layer: the signal
after its activation (std, zero, saturated and dead fractions), the weight-gradient RMS and
``||dL/dh||``, the gradient with respect to the layer's activation, taken as the gradient of a
zero shift added to that activation. The verdict and remedies are ``gg.check``'s, with Keras
how-to lines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from gradguard.diagnosis.finding import Finding
from gradguard.diagnosis.knowledge import KERAS_HOW, TECHNIQUES
from gradguard.errors import ConfigError, GradguardError
from gradguard.keras._layers import discover
from gradguard.model.activations import kind_of, saturation_tolerance
from gradguard.preflight.report import CheckReport, LayerRow
from gradguard.preflight.verdict import MIN_ROWS_FOR_DEAD, VERDICTS, findings_for

__all__ = ["check"]

_NAN = math.nan


def check(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    seed: int = 0,
) -> CheckReport:
    """Preflight a Keras model: per-layer signal and gradient at its current weights, verdict,
    remedies. The model's weights and state are not changed (inference mode: BatchNorm uses its
    moving statistics, Dropout is off).

    Args:
        model: a built ``keras.Model``.
        x: an example batch (what ``model(x)`` accepts).
        y: targets for ``loss_fn``; without them the loss is a fixed random unit projection of the
            output (``seed``), which sends a gradient of the same size into every output.
        loss_fn: ``loss_fn(y, y_pred)`` returning a scalar (e.g. a ``keras.losses.Loss``);
            default with ``y``: the compiled model's loss, else mean squared error.
        seed: seed of the projection.

    Returns:
        A :class:`~gradguard.preflight.CheckReport` (``print(report)`` shows the table).

    >>> print(gradguard.keras.check(model, x_batch))   # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"gradguard.keras.check needs a keras.Model, got {type(model).__name__}; "
            "for a torch nn.Module use gg.check(model, x)"
        )
    table = discover(model)
    if not table.layers:
        raise ConfigError(
            f"model {model.name!r} has no trainable weights to check; build it first "
            "(give it a keras.Input or call it on a batch)"
        )
    cols = [(c, lay) for c, lay in enumerate(table.outputs) if lay is not None]
    loss_of = _loss(model, y, loss_fn, seed)
    captured: dict[int, Any] = {}
    shifts: dict[int, Any] = {}
    originals = {id(lay): lay.__dict__.get("call") for _, lay in cols}
    for c, lay in cols:
        lay.call = _shifted(lay, lay.call, c, captured, shifts)
    try:
        try:
            out = model(x, training=False)  # shapes of the activations (no shift yet)
        except Exception as e:
            raise GradguardError(
                f"the model failed on the example batch ({type(e).__name__}: {e}); pass a batch "
                "that model(x) accepts"
            ) from e
        zeros = {c: ops.zeros_like(captured[c]) for c in captured}
        loss, acts, g_shift, g_weights = _backward(model, x, out, loss_of, zeros, captured, shifts)
    finally:
        for _, lay in cols:
            orig = originals[id(lay)]
            if orig is None:
                lay.__dict__.pop("call", None)
            else:
                lay.call = orig
    return _report(model, table, cols, loss, acts, g_shift, g_weights)


def _shifted(
    layer: Any, call: Callable[..., Any], col: int, captured: dict[int, Any], shifts: dict[int, Any]
) -> Callable[..., Any]:
    def call_and_shift(*args: Any, **kwargs: Any) -> Any:
        out = call(*args, **kwargs)
        if col in shifts:
            out = out + shifts[col]
        captured[col] = out
        return out

    return call_and_shift


def _loss(model: Any, y: Any, loss_fn: Any, seed: int) -> Callable[[Any], Any]:
    if y is None:
        if loss_fn is not None:
            raise ConfigError("loss_fn needs targets: pass y= as well (or neither)")
        rng = np.random.default_rng(seed)

        cache: dict[str, Callable[[Any], Any]] = {}

        def fixed(out: Any) -> Any:  # the same projection on every call
            if "r" not in cache:
                r = rng.standard_normal(tuple(int(d) for d in out.shape)).astype("float32")
                r /= np.linalg.norm(r)
                cache["r"] = lambda o: ops.sum(ops.cast(o, "float32") * r)
            return cache["r"](out)

        return fixed
    fn = loss_fn
    if fn is None:
        compiled = getattr(model, "loss", None)
        fn = keras.losses.get(compiled) if compiled is not None else keras.losses.MeanSquaredError()
    return lambda out: fn(y, out)


def _backward(
    model: Any,
    x: Any,
    out0: Any,
    loss_of: Callable[[Any], Any],
    zeros: dict[int, Any],
    captured: dict[int, Any],
    shifts: dict[int, Any],
) -> tuple[float, dict[int, np.ndarray], dict[int, np.ndarray], list[np.ndarray | None]]:
    """(loss, activations, dL/dh per column, dL/dw per trainable variable) as numpy."""
    backend = keras.backend.backend()
    tv = model.trainable_variables
    order = sorted(zeros)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            z = [tf.convert_to_tensor(zeros[c]) for c in order]
            tape.watch(z)
            shifts.update(zip(order, z))
            loss = loss_of(model(x, training=False))
        grads = tape.gradient(loss, z + list(tv))
        acts = {c: captured[c] for c in order}
    elif backend == "jax":
        import jax

        def f(zs: list[Any], ws: list[Any]) -> Any:
            shifts.update(zip(order, zs))
            with keras.StatelessScope(state_mapping=list(zip(tv, ws))):
                value = loss_of(model(x, training=False))
            return value, [captured[c] for c in order]

        (loss, act_list), (gz, gw) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
            [zeros[c] for c in order], [v.value for v in tv]
        )
        grads = list(gz) + list(gw)
        acts = dict(zip(order, act_list))
    elif backend == "torch":
        import torch

        z = [zeros[c].clone().requires_grad_(True) for c in order]
        shifts.update(zip(order, z))
        loss = loss_of(model(x, training=False))
        grads = list(torch.autograd.grad(loss, z + [v.value for v in tv], allow_unused=True))
        acts = {c: captured[c].detach() for c in order}
    else:
        raise GradguardError(
            f"gradguard.keras.check supports the tensorflow, jax and torch backends, not {backend!r}"
        )
    shifts.clear()

    def host(t: Any) -> np.ndarray | None:
        return None if t is None else np.asarray(ops.convert_to_numpy(t), dtype=np.float64)

    n = len(order)
    g_shift = {c: h for c, g in zip(order, grads[:n]) if (h := host(g)) is not None}
    act_np = {c: h for c, a in acts.items() if (h := host(a)) is not None}
    return (
        float(np.asarray(ops.convert_to_numpy(loss))),
        act_np,
        g_shift,
        [host(g) for g in grads[n:]],
    )


def _report(
    model: Any,
    table: Any,
    cols: list[tuple[int, Any]],
    loss: float,
    acts: dict[int, np.ndarray],
    g_shift: dict[int, np.ndarray],
    g_weights: list[np.ndarray | None],
) -> CheckReport:
    sq = np.zeros(len(table.layers))
    nonfinite = 0
    for v, g in zip(model.trainable_variables, g_weights):
        if g is not None:
            sq[table.columns[id(v)]] += float(np.sum(g * g))
            nonfinite += int(not np.isfinite(g).all())
    rows: list[LayerRow] = []
    agn = np.full(len(table.layers), _NAN)
    for c, lay in enumerate(table.layers):
        a = acts.get(c)
        stats: dict[str, float] = {}
        if a is not None:
            kind = kind_of(lay.activation)
            bounds = None if kind is None else kind.bounds
            sat = _NAN
            if bounds is not None and all(math.isfinite(b) for b in bounds):
                lo, hi = saturation_tolerance(bounds)
                sat = float(np.mean((a <= lo) | (a >= hi)))
            units = a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a.reshape(-1, 1)
            dead = (
                float(np.mean(np.all(units == 0, axis=0)))
                if len(units) >= MIN_ROWS_FOR_DEAD
                else _NAN
            )
            stats = dict(
                act_std=float(a.std()),
                sat_frac=sat,
                zero_frac=float(np.mean(a == 0)),
                dead_frac=dead,
                q=_NAN,
            )
            nonfinite += int(not np.isfinite(a).all())
        g = g_shift.get(c)
        if g is not None:
            agn[c] = float(np.sqrt(np.sum(g * g)))
        gain = agn[c - 1] / agn[c] if c > 0 and agn[c] > 0 else _NAN
        rows.append(
            LayerRow(
                index=c,
                name=lay.name,
                kind=lay.kind,
                activation=lay.activation,
                calls=1,
                grad_rms=float(np.sqrt(sq[c] / max(lay.numel, 1))),
                act_grad_norm=float(agn[c]),
                gain=float(gain),
                **stats,
            )
        )
    ratio, gain = _gain(agn)
    nonfinite += 0 if math.isfinite(loss) else 1
    acts_named = [r.activation for r in rows if r.activation]
    activation = max(set(acts_named), key=acts_named.count).lower() if acts_named else None
    found = findings_for(
        rows,
        grad_ratio=ratio,
        backward_gain=gain,
        nonfinite=nonfinite,
        activation=activation,
        jacobian_msv=None,
        has_norm=any("Normalization" in lay.kind for lay in table.layers),
    )
    found = [_in_keras(f) for f in found]
    return CheckReport(
        layers=tuple(rows),
        jacobian=None,
        findings=tuple(found),
        verdict=VERDICTS.get(found[0].kind, found[0].kind),
        loss=loss,
        grad_ratio=ratio,
        backward_gain=gain,
        notes=("input-output Jacobian: not measured for Keras models",),
    )


def _gain(agn: np.ndarray) -> tuple[float, float]:
    """(first/last ||dL/dh|| ratio, per-layer backward gain fitted on log ||dL/dh|| over depth)."""
    idx = np.flatnonzero(np.isfinite(agn))
    if idx.size < 2:
        return _NAN, _NAN
    first, last = agn[idx[0]], agn[idx[-1]]
    ratio = (_NAN if first == 0 else math.inf) if last == 0 else float(first / last)
    pos = idx[agn[idx] > 0]
    if pos.size < 2:
        return ratio, _NAN
    slope = np.polyfit(pos.astype(float), np.log(agn[pos]), 1)[0]
    return ratio, float(math.exp(-slope))


def _in_keras(finding: Finding) -> Finding:
    """The finding with its remedies' how-to lines in Keras."""
    by_name = {t.name: k for k, t in TECHNIQUES.items()}
    remedies = tuple(
        dataclasses.replace(r, how=KERAS_HOW.get(by_name.get(r.name, ""), r.how))
        for r in finding.remedies
    )
    return dataclasses.replace(finding, remedies=remedies)
