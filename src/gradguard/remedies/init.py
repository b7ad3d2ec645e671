"""``init_``: re-initialise a model's weight layers for a given activation (in place).

>>> import gradguard as gg
>>> summary = gg.init_(model, "he")                  # doctest: +SKIP
>>> summary = gg.init_(model, "lsuv", data=batch)     # doctest: +SKIP
>>> print(summary)                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from gradguard.errors import ConfigError, GradguardError
from gradguard.model.activations import kind_of
from gradguard.model.schemes import Choice, Scheme
from gradguard.remedies._activations import (
    ActivationChoice,
    activation_of,
    is_weight_layer,
    leaf_order,
)
from gradguard.remedies._checks import check_module, check_number
from gradguard.remedies._init_summary import InitSummary, LayerInit
from gradguard.remedies._lsuv import lsuv_rescale

__all__ = ["Scheme", "init_", "InitSummary", "LayerInit"]


class Distribution(Choice):
    UNIFORM = "uniform"
    NORMAL = "normal"


class Mode(Choice):
    FAN_IN = "fan_in"  # keeps the forward signal's variance
    FAN_OUT = "fan_out"  # keeps the backward gradient's variance


_GATES = {nn.LSTM: 4, nn.GRU: 3}


def _given_activation(nonlinearity: Any) -> ActivationChoice | None:
    if nonlinearity is None:
        return None
    if isinstance(nonlinearity, nn.Module):
        act = activation_of([nn.Identity(), nonlinearity], 0, "given", "unknown")
        if act.nonlinearity == "unknown":
            raise ConfigError(
                f"nonlinearity={type(nonlinearity).__name__} has no known gain; pass a name "
                "such as 'relu', 'tanh', 'leaky_relu', 'sigmoid', 'selu' or 'linear'"
            )
        return ActivationChoice(act.nonlinearity, act.param, act.label, "given")
    name = str(nonlinearity).lower()
    try:
        nn.init.calculate_gain(name)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(
            f"nonlinearity={nonlinearity!r} is not known; use 'relu', 'tanh', 'leaky_relu', "
            "'sigmoid', 'selu' or 'linear' (or pass the activation module)"
        ) from None
    kind = kind_of(name)  # "selu": the table's "linear" (LeCun), see ActivationKind
    nl = kind.nonlinearity if kind is not None and kind.nonlinearity is not None else name
    return ActivationChoice(nl, None, name, "given")


def _draw(
    scheme: Scheme, dist: Distribution, mode: Mode, act: ActivationChoice
) -> Callable[[torch.Tensor], Any]:
    """The torch.nn.init call that fills one weight matrix (or one gate of it)."""
    gain = act.gain
    if scheme is Scheme.XAVIER:
        fn = nn.init.xavier_uniform_ if dist is Distribution.UNIFORM else nn.init.xavier_normal_
        return lambda w: fn(w, gain=gain)
    if scheme is Scheme.HE:
        kfn = nn.init.kaiming_uniform_ if dist is Distribution.UNIFORM else nn.init.kaiming_normal_
        a = act.param or 0.0
        nl = act.nonlinearity  # SELU: "linear", so Var(W) = 1/fan (LeCun), as SELU needs
        return lambda w: kfn(w, a=a, mode=mode.value, nonlinearity=nl)  # type: ignore[arg-type]
    # orthogonal, and lsuv's orthonormal start (gain 1: the data sets the scale)
    g = 1.0 if scheme is Scheme.LSUV else gain
    return lambda w: nn.init.orthogonal_(w, gain=g)


def _init_rnn(
    m: nn.RNNBase, scheme: Scheme, dist: Distribution, mode: Mode
) -> tuple[ActivationChoice, str]:
    """Per-gate init of every weight matrix of a recurrent layer; biases zeroed."""
    gates = next((g for cls, g in _GATES.items() if isinstance(m, cls)), 1)
    if gates == 1:  # plain RNN: its own nonlinearity sets the gain
        nl = str(m.nonlinearity)
        act = ActivationChoice(nl, None, nl, "cell")
    else:  # LSTM/GRU gates mix sigmoid and tanh; the usual choice is gain 1
        act = ActivationChoice("linear", None, "gates", "cell")
    draw = _draw(scheme, dist, mode, act)
    for pname, p in m.named_parameters(recurse=False):
        if pname.startswith("bias"):
            p.zero_()
        elif pname.startswith("weight_hr"):  # LSTM projection: one matrix
            draw(p)
        else:
            for gate in p.chunk(gates, dim=0):  # (hidden, in) per gate
                draw(gate)
    note = f"per-gate ({gates} gates)" if gates > 1 else ""
    if scheme is Scheme.LSUV:
        note = (note + "; " if note else "") + "recurrent: orthonormal only, no rescaling"
    return act, note


def _weights(m: nn.Module) -> list[torch.Tensor]:
    return [p for n, p in m.named_parameters(recurse=False) if n.startswith("weight")]


@torch.no_grad()
def init_(
    model: nn.Module,
    scheme: str | Scheme,
    *,
    data: Any = None,
    nonlinearity: str | nn.Module | None = None,
    distribution: str | None = None,
    mode: str = "fan_in",
    tol: float = 0.1,
    max_iter: int = 10,
) -> InitSummary:
    """Re-initialise every Linear, Conv1d/2d/3d and RNN/LSTM/GRU layer of ``model`` in place.

    The gain of each layer is chosen for the activation that follows it: the next activation
    module in forward order (traced with hooks on one pass of ``data`` when given, else in
    registration order, which is forward order for ``nn.Sequential``). Dropout, norms and
    pooling are looked through. A layer followed by nothing is an output layer (gain 1); when no
    activation module is found (e.g. a functional ``F.relu``), "he" assumes ReLU and the others
    assume linear, and the summary says so: pass ``nonlinearity=`` to set it yourself.
    Recurrent layers are initialised per gate (gain of ``nn.RNN``'s own nonlinearity; gain 1
    for LSTM/GRU gates) and ignore ``nonlinearity``. Biases are zeroed.

    Args:
        model: the model to initialise.
        scheme: "xavier", "he", "orthogonal" or "lsuv" (a :class:`Scheme`).
        data: a batch (tensor, tuple of args, or dict of kwargs) for ``model``; needed by
            "lsuv", used by the others to trace the forward order.
        nonlinearity: the activation of every Linear/Conv layer ("relu", "tanh",
            "leaky_relu", ... or a module such as ``nn.LeakyReLU(0.2)``); overrides detection.
        distribution: "uniform" or "normal" for xavier/he (default: xavier uniform, he normal).
        mode: "fan_in" or "fan_out" for he.
        tol: lsuv: stop when ``|Var(output) - 1| < tol``.
        max_iter: lsuv: at most this many rescaling passes per layer.

    Returns:
        :class:`InitSummary`: per layer the activation, gain, weight std (and for lsuv the
        output variance reached).

    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> print(init_(net, "he").layers[0].activation)
    ReLU
    """
    check_module(model, "init_")
    sch = Scheme.parse(scheme, "scheme")
    default_dist = Distribution.UNIFORM if sch is Scheme.XAVIER else Distribution.NORMAL
    dist = Distribution.parse(distribution, "distribution") if distribution else default_dist
    fan = Mode.parse(mode, "mode")
    tol = check_number("tol", tol, low=0.0)
    max_iter = int(check_number("max_iter", max_iter, low=1, low_inclusive=True, integer=True))
    given = _given_activation(nonlinearity)
    if sch is Scheme.LSUV and data is None:
        raise ConfigError("scheme 'lsuv' needs a batch: init_(model, 'lsuv', data=x)")
    names = {m: (n or "(root)") for n, m in model.named_modules()}
    was_training = model.training
    model.eval()  # dropout off: the trace and LSUV's variances see the plain signal
    try:
        order, how = leaf_order(model, data)
        ran = len(order)
        order += [m for m in names if is_weight_layer(m) and m not in order]  # did not run
        default = "relu" if sch is Scheme.HE else "linear"
        rows: list[LayerInit] = []
        lsuv_layers: list[tuple[int, nn.Module]] = []
        for i, m in enumerate(order):
            if not is_weight_layer(m):
                continue
            note = ""
            if isinstance(m, nn.RNNBase):
                act, note = _init_rnn(m, sch, dist, fan)
            else:
                act = given or (
                    activation_of(order[:ran], i, how, default)
                    if i < ran
                    else ActivationChoice(
                        default, None, default, "default (did not run on the data)"
                    )
                )
                weight, bias = m.weight, m.bias
                assert isinstance(weight, torch.Tensor)
                _draw(sch, dist, fan, act)(weight)
                if isinstance(bias, torch.Tensor):
                    bias.zero_()
                if sch is Scheme.LSUV:
                    lsuv_layers.append((len(rows), m))
            gain = 1.0 if sch is Scheme.LSUV else act.gain
            rows.append(
                LayerInit(
                    names[m],
                    type(m).__name__,
                    sch.value,
                    act.label,
                    act.source,
                    gain,
                    0.0,
                    note=note,
                )
            )
        if not rows:
            raise GradguardError(
                f"init_: {type(model).__name__} has no Linear, Conv or RNN layer to initialise; "
                "initialise other layers with torch.nn.init directly"
            )
        for row_i, m in lsuv_layers:  # forward order: earlier layers are final before later ones
            var, it = lsuv_rescale(model, m, data, tol, max_iter)
            note = "did not run on the data" if var is None else ""
            rows[row_i] = replace(rows[row_i], output_var=var, iterations=it, note=note)
        mods = {names[m]: m for m in names}
        rows = [_with_std(r, mods[r.name]) for r in rows]
    except GradguardError:
        raise
    except Exception as e:  # a model that fails on `data`: say where it came from
        raise GradguardError(
            f"init_ could not run the model on `data`: {e}; check the batch shape"
        ) from e
    finally:
        model.train(was_training)
    return InitSummary(sch.value, tuple(rows))


def _with_std(r: LayerInit, m: nn.Module) -> LayerInit:
    w = torch.cat([p.detach().float().reshape(-1) for p in _weights(m)])
    return replace(r, weight_std=float(w.std()))
