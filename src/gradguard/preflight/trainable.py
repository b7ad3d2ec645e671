"""Will it train? A verdict from what one forward and one backward pass show at initialisation.

The gradient ratio alone cannot tell a shallow sigmoid net that trains from a deep one that does
not, nor a net whose forward signal grows x(sigma^2/2) per layer from a healthy one. The verdict
reads a handful of signals (:func:`signals`), each a number >= 0 that is 0 for a textbook-healthy
net and grows with the trouble:

- ``vanish`` / ``explode``: -log10 / +log10 of the gradient ratio first/last layer;
- ``q_growth`` / ``q_decay``: +log10 / -log10 of the forward signal q (mean square of the
  pre-activations) at the last layer over q at the first;
- ``collapse``: -log10 of the outputs' spread over the batch, ``sum_i ||y_i - mean y||^2 /
  sum_i ||y_i||^2``: all examples mapped to nearly the same output is the ordered phase, where the
  correlation between inputs goes to 1 over a few correlation lengths xi_c (Schoenholz et al. 2017);
- ``scramble``: 1 - the Pearson correlation between the pairwise cosines of the (centred) inputs and
  those of the (centred) outputs: the chaotic phase forgets which inputs were alike;
- ``saturation`` and ``dead``: the worst layer's fraction of saturated outputs / dead units;
- ``jacobian``: |log10| of the input-output Jacobian's mean squared singular value;
- ``log_depth``: log2 of the number of layers;
- ``probe`` (only with ``gg.check(..., probe_steps=K)``): log10 of the best ratio of the loss after
  K Adam steps on the batch to the loss before, over the learning rates 1e-3 and 1e-2
  (:mod:`gradguard.preflight.probe`).

A logistic model over these, fitted on the calibration half of the grid of
``benchmarks/trainability.py`` (its weights, the features' centring and scale, and the decision
threshold live in ``_calibration.py``, written by that benchmark: ``STATIC`` for one pass,
``PROBE`` with the trial), gives the probability that the net trains; the verdict is
``p >= threshold``, and the confidence says how far p lies on the verdict's side of it. Non-finite values
at initialisation are untrainable outright.

>>> t = verdict({"vanish": 0.0, "explode": 0.0})    # doctest: +SKIP
>>> t.trainable, round(t.confidence, 2)             # doctest: +SKIP
(True, 0.97)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gradguard.errors import GradguardError
from gradguard.format import number, percent
from gradguard.model.tensors import first_tensor
from gradguard.preflight import _calibration as cal

__all__ = ["FEATURES", "PROBE_FEATURES", "Trainability", "signals", "verdict"]

FEATURES = (
    "vanish",
    "explode",
    "q_growth",
    "q_decay",
    "collapse",
    "scramble",
    "saturation",
    "dead",
    "jacobian",
    "log_depth",
)
PROBE_FEATURES = (*FEATURES, "probe")
# the fitted models and the signals they weigh, in order (_calibration.py holds only numbers)
_MODELS = ((FEATURES, cal.STATIC), (PROBE_FEATURES, cal.PROBE))
for _names, _model in _MODELS:
    if not len(_model["mean"]) == len(_model["scale"]) == len(_model["weights"]) == len(_names):
        raise GradguardError(
            f"_calibration.py has {len(_model['weights'])} weights for the {len(_names)} signals "
            f"{_names}; refit it: python benchmarks/trainability.py --write"
        )
_CAP = 30.0  # log10 values are capped here (underflow to 0 / overflow to inf reads as 1e+-30)
_MAX_EXAMPLES = 64  # pairwise cosines over at most this many examples (2016 pairs)
_REASONS = 3  # the signals that moved the log-odds most the verdict's way are named


@dataclass(frozen=True)
class Trainability:
    """The verdict: will this network, as initialised, train?

    Args:
        trainable: True when the calibrated probability of training reaches the threshold.
        confidence: 0.5..1: how far p lies from the threshold on the verdict's side (0.5 at the
            threshold, 1 at p = 1 for "trainable" or p = 0 for "not trainable").
        probability: the calibrated probability p that the net trains.
        reasons: the signals that decided it, most decisive first, each with its number.
        numbers: every signal (see the module docstring), nan where it could not be measured.
    """

    trainable: bool
    confidence: float
    probability: float
    reasons: tuple[str, ...] = ()
    numbers: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "trainable": self.trainable,
            "confidence": self.confidence,
            "probability": self.probability,
            "reasons": list(self.reasons),
            "numbers": {k: num(v) for k, v in self.numbers.items()},
        }

    def __str__(self) -> str:
        word = "yes" if self.trainable else "no"
        return f"trainable: {word} (confidence {self.confidence:.0%})"


def _log10(v: float) -> float:
    """log10 of a ratio, capped at +-_CAP (0 -> -cap, inf -> +cap, nan stays nan)."""
    if math.isnan(v):
        return math.nan
    if v <= 0:
        return -_CAP
    if math.isinf(v):
        return _CAP
    return max(-_CAP, min(_CAP, math.log10(v)))


def _per_example(t: Any) -> torch.Tensor | None:
    """(examples, features) float64 view of a batch-first float tensor, or None."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 2:
        return None
    if t.shape[0] < 4:
        return None
    return t.detach()[:_MAX_EXAMPLES].reshape(min(t.shape[0], _MAX_EXAMPLES), -1).double()


def _spread(y: torch.Tensor) -> float:
    """sum_i ||y_i - mean y||^2 / sum_i ||y_i||^2 over the batch (0: every example the same)."""
    total = float(y.pow(2).sum())
    if not math.isfinite(total) or total == 0:
        return math.nan
    return float((y - y.mean(0)).pow(2).sum()) / total


def _cosines(z: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines (i < j) of the centred rows of z: (pairs,)."""
    c = z - z.mean(0)
    n = c.norm(dim=1, keepdim=True)
    c = c / n.clamp_min(1e-300)
    g = c @ c.T
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    return g[i, j]


def _scramble(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - Pearson correlation of the inputs' and the outputs' pairwise cosines."""
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.nan
    a, b = _cosines(x), _cosines(y)
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    if den == 0 or not math.isfinite(den):
        return math.nan
    return 1.0 - float(a @ b) / den


def signals(
    rows: Sequence[Any],
    *,
    grad_ratio: float,
    inputs: Any,
    output: Any,
    jacobian_msv: float | None,
) -> dict[str, float]:
    """The verdict's signals from the check's rows and the pass's input and output."""
    lgr = _log10(grad_ratio)
    qs = [r.q for r in rows if math.isfinite(r.q) or r.q == math.inf]
    # the head (last layer) is a plain readout; the signal's fate is read at the last hidden layer
    hidden = qs[:-1] if len(qs) >= 3 else qs
    lq = _log10(hidden[-1] / hidden[0]) if len(hidden) >= 2 and hidden[0] > 0 else math.nan
    if len(hidden) >= 2 and hidden[0] == 0:
        lq = -_CAP
    x, y = _per_example(inputs), _per_example(first_tensor(output))
    spread = _spread(y) if y is not None else math.nan
    sat = [r.sat_frac for r in rows if math.isfinite(r.sat_frac)]
    dead = [r.dead_frac for r in rows if math.isfinite(r.dead_frac)]
    jac = _log10(jacobian_msv) if jacobian_msv is not None else math.nan
    return {
        "vanish": max(0.0, -lgr) if math.isfinite(lgr) else math.nan,
        "explode": max(0.0, lgr) if math.isfinite(lgr) else math.nan,
        "q_growth": max(0.0, lq) if math.isfinite(lq) else math.nan,
        "q_decay": max(0.0, -lq) if math.isfinite(lq) else math.nan,
        "collapse": min(_CAP, -_log10(spread)) if math.isfinite(spread) else math.nan,
        "scramble": _scramble(x, y) if x is not None and y is not None else math.nan,
        "saturation": max(sat) if sat else 0.0,
        "dead": max(dead) if dead else 0.0,
        "jacobian": abs(jac) if math.isfinite(jac) else math.nan,
        "log_depth": math.log2(max(len(rows), 1)),
    }


def _contributions(
    numbers: Mapping[str, float], names: Sequence[str], model: Mapping[str, Any]
) -> dict[str, float]:
    """Each signal's term in the log-odds; an unmeasured signal sits at its calibration mean (0)."""
    out = {}
    for name, mean, scale, w in zip(names, model["mean"], model["scale"], model["weights"]):
        v = numbers.get(name, math.nan)
        out[name] = 0.0 if not math.isfinite(v) else w * (v - mean) / scale
    return out


def _reason(name: str, v: float) -> str:
    """One signal in words, with its number."""
    ratio = 10.0 ** (-v if name in ("vanish", "q_decay") else v) if math.isfinite(v) else v
    text = {
        "vanish": f"the gradient at the first layer is {number(ratio)}x that at the last",
        "explode": f"the gradient at the first layer is {number(ratio)}x that at the last",
        "q_growth": f"the forward signal q grows {number(ratio)}x from the first layer to the last",
        "q_decay": f"the forward signal q shrinks to {number(ratio)}x from the first layer to the last",
        "collapse": f"the outputs' spread over the batch is {number(10.0**-v)} of their size "
        "(inputs mapped to nearly the same output: ordered phase)",
        "scramble": f"the outputs keep {number(1.0 - v)} of the inputs' similarity structure "
        "(correlation of pairwise cosines; chaotic phase near 0)",
        "saturation": f"{percent(v)} of a bounded activation's outputs are saturated (worst layer)",
        "dead": f"{percent(v)} of a layer's units are dead (worst layer)",
        "jacobian": f"the input-output Jacobian's mean squared singular value is 10^{v:+.1f} "
        "away from 1",
        "log_depth": f"{number(2.0**v)} layers",
        "probe": f"a short trial on the batch brings the loss to {number(ratio)}x its start",
    }
    return text[name]


def verdict(numbers: Mapping[str, float], *, nonfinite: int = 0) -> Trainability:
    """The calibrated verdict from :func:`signals` (see the module docstring)."""
    nums = dict(numbers)
    if nonfinite:
        return Trainability(
            False,
            1.0,
            0.0,
            (f"{nonfinite} non-finite values in the forward or backward pass at init",),
            nums,
        )
    names, model = _MODELS[1] if math.isfinite(nums.get("probe", math.nan)) else _MODELS[0]
    contrib = _contributions(nums, names, model)
    z = model["bias"] + sum(contrib.values())
    p = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
    ok = p >= model["threshold"]
    # the signals that pushed the verdict its way, most decisive first
    sign = 1.0 if ok else -1.0
    decisive = sorted(
        (n for n, c in contrib.items() if sign * c > 0), key=lambda n: -sign * contrib[n]
    )[:_REASONS]
    reasons = [_reason(n, nums[n]) for n in decisive]
    if not reasons:
        reasons = [
            "every signal is within the range of the calibration nets that trained"
            if ok
            else "no single signal is out of range; together they point against training"
        ]
    t = model["threshold"]
    # 0.5 at the threshold, 1 at p = 1 (trainable) or p = 0 (not): how far p is on its side
    confidence = 0.5 + 0.5 * ((p - t) / (1.0 - t) if ok else (t - p) / t)
    return Trainability(ok, confidence, p, tuple(reasons), nums)
