"""Preflight check: one forward and one backward pass at the current weights, no optimizer step.

>>> report = gg.check(model, torch.randn(64, 784))     # doctest: +SKIP
>>> report.verdict                                     # doctest: +SKIP
'healthy'
>>> print(report)                                      # doctest: +SKIP

Per layer (in forward execution order): the std of the signal after the layer's activation, the
fraction of saturated / zero / dead outputs, the gradient rms of its parameters, the norm of the
gradient at its output (act_grad_norm) and the measured backward gain act_grad_norm[l-1] /
act_grad_norm[l]. For Linear -> activation stacks the mean-field prediction from the actual
weights (:func:`gradguard.theory.predict_layers`) sits beside the measurement. With a float input,
the input-output Jacobian's mean squared and largest singular values tell how far the network is
from dynamical isometry.

Default loss: without ``loss_fn`` the output y is projected on a fixed random direction u
(``||u|| = 1``, seeded): L = <y, u>. The gradient reaching the output then has norm exactly 1 and
no relation to the forward values (the mean-field assumption), so act_grad_norm of a layer reads
directly as the gain from the output back to that layer, and it does not vanish just because the
output is near 0 (as 0.5 * mean(y^2) would).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.errors import GradguardError
from gradguard.model.layers import discover_layers
from gradguard.model.tensors import call_model, default_loss, first_tensor
from gradguard.preflight.jacobian import JacobianStats, jacobian_stats
from gradguard.preflight.observe import Observed, observe_forward
from gradguard.preflight.probe import probe
from gradguard.preflight.report import CheckReport, LayerRow
from gradguard.preflight.state import PreservedState
from gradguard.preflight.trainable import signals, verdict
from gradguard.preflight.verdict import MIN_ROWS_FOR_DEAD, VERDICTS, findings_for

__all__ = ["check"]

_NAN = math.nan
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
JACOBIAN_EXAMPLES = 16  # larger batches: the Jacobian gets its own pass on this many examples


# ---- the check -----------------------------------------------------------------------------------


def _theory_activation(module: nn.Module | None) -> Any:
    """The theory activation equivalent to an activation module, or None."""
    from gradguard.model.activations import theory_spec
    from gradguard.theory import resolve_activation

    spec = theory_spec(module)
    return None if spec is None else resolve_activation(spec[0], **spec[1])


def check(
    model: nn.Module,
    example_input: Any,
    *,
    loss_fn: Callable[..., Any] | None = None,
    target: Any = None,
    jacobian: bool = True,
    seed: int = 0,
    probe_steps: int = 0,
) -> CheckReport:
    """Preflight a model at its current weights: signals, gradients, Jacobian, verdict.

    Args:
        model: the network. It is left exactly as found (parameters, buffers such as BatchNorm
            running statistics, train/eval modes, requires_grad, .grad, global RNG states).
        example_input: a tensor, a tuple of positional arguments or a dict of keyword arguments.
        loss_fn: ``loss_fn(output, target)`` (or ``loss_fn(output)`` without target) returning a
            scalar; default: a fixed random unit projection of the output (see module docstring).
        target: passed to ``loss_fn``.
        jacobian: estimate the input-output Jacobian spectrum (float tensor input only).
        seed: seed of the private generator for the projection and the probes.
        probe_steps: K > 0 adds a short trial to the trainability verdict: K Adam steps on
            ``example_input`` at learning rates 1e-3 and 1e-2, the weights put back after each
            (:mod:`gradguard.preflight.probe`). Needs ``loss_fn`` (and ``target``): the real task.

    Returns:
        A :class:`CheckReport`.

    Raises:
        GradguardError: not a module, no parameters, the input does not fit the model, or the
            loss is not a scalar.
    """
    if isinstance(probe_steps, bool) or not isinstance(probe_steps, int) or probe_steps < 0:
        raise GradguardError(f"probe_steps must be an int >= 0, got {probe_steps!r}; e.g. 20")
    if probe_steps and loss_fn is None:
        raise GradguardError(
            "probe_steps needs the real task: pass loss_fn (and target), e.g. "
            "loss_fn=torch.nn.functional.cross_entropy, target=labels"
        )
    layers = discover_layers(model)
    gen = torch.Generator().manual_seed(seed)
    state = PreservedState(model)
    notes: list[str] = []
    try:
        x = example_input
        want_jac = jacobian and isinstance(x, torch.Tensor) and x.is_floating_point()
        # the Jacobian uses the measured graph for small batches, else its own pass on a sub-batch
        jac_own_pass = want_jac and x.ndim > 0 and x.shape[0] > JACOBIAN_EXAMPLES
        if want_jac and not jac_own_pass:
            x = x.detach().clone().requires_grad_(True)
        elif not want_jac and jacobian:
            notes.append("Jacobian skipped: it needs a single floating-point input tensor")
        with torch.enable_grad():
            try:
                obs = observe_forward(model, layers, lambda: call_model(model, x))
            except GradguardError:
                raise
            except Exception as e:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise GradguardError(
                    f"the model failed on the example input {shape}: {type(e).__name__}: {e}; "
                    "pass an input the model accepts (check --input-shape / the batch dimension)"
                ) from e
            loss = default_loss(obs.output, loss_fn, target, generator=gen)
            if not loss.requires_grad:
                raise GradguardError(
                    "the loss does not depend on any trainable parameter (all frozen, or the "
                    "output is detached); unfreeze a layer with requires_grad_(True) or check "
                    "that forward() returns a tensor built from the parameters"
                )
            rows, nonfinite, agn = _gradients(layers, obs, loss)
            jac = _jacobian(model, x, obs, gen, state, notes) if want_jac else None
        rows = _predict(rows, layers, obs, notes)
        grad_ratio, gain = _gain(agn)
        nonfinite += 0 if math.isfinite(float(loss.detach())) else 1
        acts = [r.activation for r in rows if r.activation]
        activation = max(set(acts), key=acts.count).lower() if acts else None
        found = findings_for(
            rows,
            grad_ratio=grad_ratio,
            backward_gain=gain,
            nonfinite=nonfinite,
            activation=activation,
            jacobian_msv=jac.mean_sq_singular_value if jac else None,
            has_norm=any(isinstance(m, _NORMS) for m in model.modules()),
        )
        numbers = signals(
            rows,
            grad_ratio=grad_ratio,
            inputs=example_input,
            output=obs.output,
            jacobian_msv=jac.mean_sq_singular_value if jac else None,
        )
        if probe_steps and not nonfinite:
            assert loss_fn is not None
            state.restore_rng()
            numbers["probe"] = probe(model, example_input, loss_fn, target, steps=probe_steps)
        return CheckReport(
            layers=tuple(rows),
            jacobian=jac,
            findings=tuple(found),
            verdict=VERDICTS.get(found[0].kind, found[0].kind),
            loss=float(loss.detach()),
            grad_ratio=grad_ratio,
            backward_gain=gain,
            notes=tuple(notes),
            trainability=verdict(numbers, nonfinite=nonfinite),
        )
    finally:
        state.restore()


def _jacobian(
    model: nn.Module,
    x: torch.Tensor,
    obs: Observed,
    gen: torch.Generator,
    state: PreservedState,
    notes: list[str],
) -> JacobianStats | None:
    """Jacobian statistics on the measured graph, or on a first-examples pass for big batches."""
    try:
        xj, yj = x, first_tensor(obs.output)
        if not x.requires_grad:  # batch > JACOBIAN_EXAMPLES: own pass, same dropout stream
            state.restore_rng()
            xj = x[:JACOBIAN_EXAMPLES].detach().clone().requires_grad_(True)
            yj = first_tensor(call_model(model, xj))
            notes.append(f"Jacobian estimated on the first {JACOBIAN_EXAMPLES} examples")
        if yj is None or not yj.is_floating_point() or not yj.requires_grad:
            notes.append(
                "Jacobian skipped: the output is not a float tensor depending on the input"
            )
            return None
        return jacobian_stats(yj, xj, generator=gen)
    except Exception as e:  # the table and verdict do not need it
        notes.append(f"Jacobian skipped: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return None


def _std(s1: float, s2: float, n: int) -> float:
    return math.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)) if n else _NAN


def _gradients(
    layers: list[Any], obs: Observed, loss: torch.Tensor
) -> tuple[list[LayerRow], int, np.ndarray]:
    """Per-layer rows (forward order) with gradient statistics from one autograd.grad call."""
    order: list[Any] = []  # layer infos in first-call order
    by_id = {id(info.module): info for info in layers}
    seen: set[int] = set()
    outputs: dict[int, list[torch.Tensor]] = {}
    act_of: dict[int, Any] = {}  # id(layer output tensor) -> activation call
    for call in obs.calls:
        if not call.is_layer and call.input is not None:
            act_of.setdefault(id(call.input), call)
    linked: dict[int, Any] = {}
    for call in obs.calls:
        if not call.is_layer:
            continue
        mid = id(call.module)
        if mid not in seen:
            seen.add(mid)
            order.append(by_id[mid])
        if call.output is not None and call.output.requires_grad:
            outputs.setdefault(mid, []).append(call.output)
        if call.output is not None and id(call.output) in act_of:
            linked.setdefault(mid, act_of[id(call.output)])
    order += [info for info in layers if id(info.module) not in seen]  # never ran

    params = [p for info in order for p in info.trainable_params]
    outs = [(mid, t) for mid, ts in outputs.items() for t in ts]
    grads = torch.autograd.grad(
        loss,
        [*params, *(t for _, t in outs)],
        retain_graph=True,
        allow_unused=True,
    )
    pgrad = dict(zip((id(p) for p in params), grads[: len(params)]))
    agn2: dict[int, float] = {}
    nonfinite = 0
    for (mid, _), g in zip(outs, grads[len(params) :]):
        if g is not None:
            v = float(g.detach().double().pow(2).sum())
            nonfinite += 0 if math.isfinite(v) else 1
            agn2[mid] = agn2.get(mid, 0.0) + v

    rows: list[LayerRow] = []
    calls = {mid: sum(1 for c in obs.calls if c.is_layer and id(c.module) == mid) for mid in seen}
    for i, info in enumerate(order):
        mid = id(info.module)
        ls = obs.layer_stats.get(mid)
        act_call = linked.get(mid)
        st = obs.act_stats.get(id(act_call.module)) if act_call is not None else None
        sig = st if st is not None else ls
        sq, n = 0.0, 0
        for p in info.trainable_params:
            pg = pgrad.get(id(p))
            if pg is not None:
                sq += float(pg.detach().double().pow(2).sum())
                n += p.numel()
        nonfinite += (ls.nonfinite if ls else 0) + (st.nonfinite if st else 0)
        nonfinite += 0 if math.isfinite(sq) else 1
        has_bounds = st is not None and act_call is not None and _bounded(act_call.module)
        dead = _NAN
        if sig is not None and sig.units_alive is not None and sig.rows >= MIN_ROWS_FOR_DEAD:
            dead = float((~sig.units_alive).float().mean())
        rows.append(
            LayerRow(
                index=i,
                name=info.name,
                kind=info.kind,
                activation=type(act_call.module).__name__ if act_call is not None else None,
                calls=calls.get(mid, 0),
                act_std=_std(sig.s1, sig.s2, sig.n) if sig and sig.n else _NAN,
                sat_frac=(st.saturated / st.n) if has_bounds and st and st.n else _NAN,
                zero_frac=(sig.zeros / sig.n) if sig and sig.n else _NAN,
                dead_frac=dead,
                q=(ls.s2 / ls.n) if ls and ls.n else _NAN,
                grad_rms=math.sqrt(sq / n) if n else _NAN,
                act_grad_norm=math.sqrt(agn2[mid]) if mid in agn2 else _NAN,
            )
        )
    agn = np.array([r.act_grad_norm for r in rows], dtype=float)
    gains = np.full(len(rows), _NAN)
    with np.errstate(divide="ignore", invalid="ignore"):
        gains[1:] = agn[:-1] / agn[1:]
    rows = [replace(r, gain=float(g)) for r, g in zip(rows, gains)]
    rows_linked = {r.name: linked.get(id(o.module)) for r, o in zip(rows, order)}
    obs.linked = rows_linked
    obs.order = order
    return rows, nonfinite, agn


def _bounded(module: nn.Module) -> bool:
    from gradguard.model.activations import activation_bounds

    return activation_bounds(module) is not None


def _predict(
    rows: list[LayerRow], layers: list[Any], obs: Observed, notes: list[str]
) -> list[LayerRow]:
    """Mean-field predictions for maximal runs of Linear -> activation -> Linear ... layers."""
    from gradguard.theory import predict_layers

    order = obs.order
    linked = obs.linked
    inputs: dict[int, torch.Tensor | None] = {}
    for c in obs.calls:
        if c.is_layer:
            inputs.setdefault(id(c.module), c.input)

    def joins(i: int, act_name: str | None) -> bool:
        """Layer i feeds layer i+1 through a supported activation (of the run's kind)."""
        a, b = order[i], order[i + 1]
        call = linked.get(rows[i].name)
        if not (type(a.module) is nn.Linear and type(b.module) is nn.Linear) or call is None:
            return False
        if rows[i].calls != 1 or rows[i + 1].calls != 1:
            return False
        act = _theory_activation(call.module)
        if act is None or (act_name is not None and act.name != act_name):
            return False
        return inputs.get(id(b.module)) is call.output

    i, n = 0, len(order)
    while i < n - 1:
        if not joins(i, None):
            i += 1
            continue
        first = linked[rows[i].name]
        assert first is not None  # joins() checked it
        act = _theory_activation(first.module)
        j = i + 1
        while j < n - 1 and joins(j, act.name):
            j += 1
        x0 = inputs.get(id(order[i].module))
        if x0 is not None and x0.is_floating_point():
            q0 = float(x0.detach().double().pow(2).mean())
            pred = predict_layers([order[k].module for k in range(i, j + 1)], act, q0)
            for k in range(i, j + 1):
                rows[k] = replace(
                    rows[k], pred_q=float(pred.q[k - i]), pred_gain=float(pred.gain[k - i])
                )
        i = j + 1
    if not any(math.isfinite(r.pred_q) for r in rows):
        notes.append("no mean-field prediction: needs consecutive nn.Linear -> activation modules")
    return rows


def _gain(agn: np.ndarray) -> tuple[float, float]:
    """(first/last gradient ratio, fitted per-layer backward gain) from act_grad_norm."""
    idx = np.nonzero(np.isfinite(agn))[0]
    if idx.size < 2:
        return _NAN, _NAN
    first, last = agn[idx[0]], agn[idx[-1]]
    if last == 0:
        ratio = _NAN if first == 0 else math.inf
    else:
        ratio = float(first / last)
    pos = idx[agn[idx] > 0]
    gain = _NAN
    if pos.size >= 2:
        slope = np.polyfit(pos.astype(float), np.log(agn[pos]), 1)[0]
        gain = float(math.exp(-slope))
    return ratio, gain
