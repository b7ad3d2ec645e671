"""Layer-by-layer mean-field prediction for an actual (possibly non-uniform) Linear stack.

Iterate the length map from the input's second moment q0, each layer with its own
sigma_w^2 = fan_in * E[W^2] and sigma_b^2 = E[b^2] (= fan_in * Var(W) and Var(b) for zero-mean
initialisations; second moments also count a constant bias):

    q_1 = sigma_w,1^2 q0 + sigma_b,1^2                       (the input is not passed through phi)
    q_l = sigma_w,l^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b,l^2
    chi_l = sigma_w,l^2 E[phi'(sqrt(q_{l-1}) z)^2]           (l >= 2)

sqrt(chi_l) is the predicted factor ||dL/dh_{l-1}|| / ||dL/dh_l||: how much the back-propagated
gradient grows passing backwards through layer l (h_l = layer l's output, before phi).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradguard.errors import GradguardError
from gradguard.theory import _gauss as G
from gradguard.theory.activations import ActivationLike, resolve_activation

__all__ = ["LayerPrediction", "predict_layers", "layer_sigmas"]


@dataclass(frozen=True)
class LayerPrediction:
    """Per-layer mean-field prediction (arrays of length L, layer 0 first).

    Args:
        activation: the activation's name.
        sigma_w2, sigma_b2: each layer's fan_in * E[W^2] and E[b^2].
        q: predicted second moment of each layer's output h_l (pre-activation).
        chi_1: sigma_w,l^2 E[phi'(sqrt(q_{l-1}) z)^2]; nan for layer 0 (its gradient flows to the
            input without passing through phi).
        gain: sqrt(chi_1), the predicted ||dL/dh_{l-1}|| / ||dL/dh_l||.
    """

    activation: str
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    q: np.ndarray
    chi_1: np.ndarray
    gain: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list[float | None]:
            return [float(v) if math.isfinite(v) else None for v in a]

        return {
            "activation": self.activation,
            "sigma_w2": clean(self.sigma_w2),
            "sigma_b2": clean(self.sigma_b2),
            "q": clean(self.q),
            "chi_1": clean(self.chi_1),
            "gain": clean(self.gain),
        }


def _to_numpy(x: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=float)


def layer_sigmas(weight: Any, bias: Any = None) -> tuple[float, float]:
    """(fan_in * E[W^2], E[b^2]) of a weight of shape (out, in, ...) and an optional bias."""
    w = _to_numpy(weight)
    if w.ndim < 2:
        raise GradguardError(
            f"a weight of shape {w.shape} has no fan-in; pass matrices of shape (out, in)"
        )
    fan_in = int(np.prod(w.shape[1:]))
    sw = float(fan_in * np.mean(w * w))
    sb = 0.0 if bias is None else float(np.mean(_to_numpy(bias) ** 2))
    return sw, sb


def _item_sigmas(item: Any) -> tuple[float, float]:
    weight = getattr(item, "weight", None)
    if weight is not None and not isinstance(item, tuple | list):  # an nn.Linear-like module
        return layer_sigmas(weight, getattr(item, "bias", None))
    if isinstance(item, tuple | list) and len(item) == 2:
        a, b = item
        if np.ndim(_to_numpy(a)) == 0:
            return float(a), float(b if b is not None else 0.0)
        return layer_sigmas(a, b)
    raise GradguardError(
        f"cannot read a layer from {type(item).__name__}; pass nn.Linear modules, "
        "(weight, bias) pairs or (sigma_w2, sigma_b2) pairs"
    )


def predict_layers(
    layers: Sequence[Any],
    activation: ActivationLike,
    q0: float,
) -> LayerPrediction:
    """Predict each layer's q_l and backward gain from the actual weights.

    Args:
        layers: in forward order, each an ``nn.Linear`` (or anything with ``.weight``/``.bias``),
            a ``(weight, bias)`` pair of arrays/tensors (bias may be None), or a
            ``(sigma_w2, sigma_b2)`` pair of floats.
        activation: the nonlinearity between consecutive layers.
        q0: mean of x^2 over the input's entries (the first layer's input).

    Returns:
        A :class:`LayerPrediction`.

    >>> p = predict_layers([(2.0, 0.0)] * 3, "relu", q0=1.0)
    >>> p.q.tolist(), p.gain[1:].tolist()
    ([2.0, 2.0, 2.0], [1.0, 1.0])
    """
    act = resolve_activation(activation)
    if len(layers) == 0:
        raise GradguardError("predict_layers needs at least one layer; pass a list of layers")
    if not (math.isfinite(float(q0)) and float(q0) >= 0):
        raise GradguardError(f"q0={q0!r} must be a finite mean square >= 0 (e.g. x.pow(2).mean())")
    sig = np.array([_item_sigmas(item) for item in layers], dtype=float)  # (L, 2)
    sw, sb = sig[:, 0], sig[:, 1]
    n = len(sw)
    q = np.empty(n)
    chi = np.full(n, math.nan)
    q[0] = sw[0] * float(q0) + sb[0]
    for i in range(1, n):
        prev = max(q[i - 1], 1e-200)
        q[i] = sw[i] * float(G.m2(act, prev)[0]) + sb[i]
        chi[i] = sw[i] * float(G.d2(act, prev)[0])
    return LayerPrediction(act.name, sw, sb, q, chi, np.sqrt(chi))
