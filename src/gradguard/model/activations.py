"""Activation modules: one declaration per kind gradguard knows.

Each :class:`ActivationKind` in :data:`ACTIVATION_TABLE` says, for one ``torch.nn`` activation
class, everything gradguard uses about it: its family (what the diagnosis and the remedies reason
with), the bounds of its output (saturation is measured against them), the nonlinearity whose
``torch.nn.init`` gain the layer before it gets (``gg.init_``), the init scheme that suits it,
and the name of the mean-field function that models it (a key :func:`gradguard.theory.
resolve_activation` understands). Every other module reads these facts from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from gradguard.model.schemes import Scheme

__all__ = [
    "ACTIVATION_BOUNDS",
    "ACTIVATION_KINDS",
    "ACTIVATION_TABLE",
    "DYING",
    "RELU_LIKE",
    "SATURATING",
    "ActivationKind",
    "activation_bounds",
    "family",
    "kind_of",
    "saturation_tolerance",
    "theory_spec",
]

# Families. Saturating: a flat tail where the derivative is ~0. Dying: zero output and zero
# gradient for every negative input, so a unit can stop learning for good. ReLU-like: neither.
SATURATING = "saturating"
DYING = "dying"
RELU_LIKE = "relu_like"
_INF = float("inf")


def _always(module: nn.Module) -> bool:
    return True


@dataclass(frozen=True)
class ActivationKind:
    """What gradguard knows about one ``torch.nn`` activation class.

    Attributes:
        name: the ``torch.nn`` class name, e.g. ``"LeakyReLU"``.
        family: :data:`SATURATING`, :data:`DYING`, :data:`RELU_LIKE` or None (none of them).
        bounds: the (low, high) range of the output when at least one side is bounded, for the
            default constructor arguments (``nn.Hardtanh`` reads its own ``min_val``/``max_val``).
        nonlinearity: the name handed to ``torch.nn.init`` (``calculate_gain``, ``kaiming_*``)
            for the layer this activation follows, or None when gradguard knows no gain for it.
            ReLU-like smooth kinds (GELU, SiLU, ELU, ...) get the ReLU gain, what practitioners
            use. SELU gets ``"linear"`` (gain 1): its self-normalisation (Klambauer et al.
            2017) needs LeCun's Var(W) = 1/fan_in, and torch's docs say to pass 'linear' for it;
            ``calculate_gain('selu')`` = 3/4 trades that fixed point away.
        theory: the key of its mean-field function in :mod:`gradguard.theory`, or None.
        params: the module attributes that are parameters of that function (and, for
            ``negative_slope``, of the gain), e.g. ``("negative_slope",)``.
        aliases: other spellings accepted by :func:`kind_of` and :func:`family`.
        theory_when: whether a given module is exactly the theory function (e.g. only the exact
            ``nn.GELU``, not its tanh approximation).
    """

    name: str
    family: str | None
    bounds: tuple[float, float] | None = None
    nonlinearity: str | None = None
    theory: str | None = None
    params: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    theory_when: Callable[[nn.Module], bool] = field(default=_always, repr=False, compare=False)

    @property
    def scheme(self) -> Scheme:
        """The init scheme that suits it: Xavier keeps saturating units near their linear range;
        He keeps the variance through ReLU-like ones."""
        return Scheme.XAVIER if self.family == SATURATING else Scheme.HE

    def params_of(self, module: nn.Module) -> dict[str, float]:
        """The values of :attr:`params` on ``module``."""
        return {p: float(getattr(module, p)) for p in self.params}


def _exact_gelu(module: nn.Module) -> bool:
    return getattr(module, "approximate", "none") == "none"


def _unit_hardtanh(module: nn.Module) -> bool:
    return activation_bounds(module) == (-1.0, 1.0)


_K = ActivationKind
ACTIVATION_TABLE: dict[str, ActivationKind] = {
    k.name: k
    for k in (
        _K("Tanh", SATURATING, (-1.0, 1.0), "tanh", "tanh"),
        _K("Sigmoid", SATURATING, (0.0, 1.0), "sigmoid", "sigmoid"),
        _K("Hardsigmoid", SATURATING, (0.0, 1.0)),
        _K("Softsign", SATURATING, (-1.0, 1.0)),
        _K("Hardtanh", SATURATING, (-1.0, 1.0), "linear", "hard_tanh", theory_when=_unit_hardtanh),
        _K("LogSigmoid", SATURATING, (-_INF, 0.0)),
        _K("Tanhshrink", SATURATING),
        _K("ReLU", DYING, None, "relu", "relu"),
        _K("ReLU6", DYING, (0.0, 6.0), "relu"),
        _K("LeakyReLU", RELU_LIKE, None, "leaky_relu", "leaky_relu", ("negative_slope",)),
        _K("PReLU", RELU_LIKE),
        _K("RReLU", RELU_LIKE),
        _K("ELU", RELU_LIKE, None, "relu", "elu", ("alpha",)),
        _K("CELU", RELU_LIKE, None, "relu"),
        _K("SELU", RELU_LIKE, None, "linear", "selu"),
        _K("GELU", RELU_LIKE, None, "relu", "gelu", theory_when=_exact_gelu),
        _K("SiLU", RELU_LIKE, None, "relu", aliases=("swish",)),
        _K("Mish", RELU_LIKE, None, "relu"),
        _K("Softplus", RELU_LIKE, None, "relu"),
        _K("Hardswish", RELU_LIKE),
        _K("Softshrink", None),
        _K("Hardshrink", None),
        _K("Threshold", None),
    )
}

# Elementwise activation modules that may follow a layer, by class name; their output is where
# activation statistics (zero and saturated fractions) mean something.
ACTIVATION_KINDS = frozenset(ACTIVATION_TABLE)

# The bounded kinds and their bounds: a unit is "saturated" when its output lies within 1% of a
# bound (relative to the bound's magnitude, or of the range when the bound is 0).
ACTIVATION_BOUNDS: dict[str, tuple[float, float]] = {
    k.name: k.bounds for k in ACTIVATION_TABLE.values() if k.bounds is not None
}


def _key(name: str) -> str:
    """``"nn.LeakyReLU"``, ``"leaky_relu"``, ``"LeakyReLU"`` -> ``"leakyrelu"``."""
    return "".join(ch for ch in name.split(".")[-1].lower() if ch.isalnum())


_BY_KEY: dict[str, ActivationKind] = {
    key: k
    for k in ACTIVATION_TABLE.values()
    for key in (_key(k.name), *(_key(a) for a in k.aliases))
}


def kind_of(activation: nn.Module | str | None) -> ActivationKind | None:
    """The :class:`ActivationKind` of a module (a ``torch.nn`` activation or a subclass of one)
    or of a name (class name or theory name, any case, ``nn.`` prefix allowed); None if unknown.

    >>> kind_of(nn.LeakyReLU(0.2)).name, kind_of("leaky_relu").name, kind_of("Identity")
    ('LeakyReLU', 'LeakyReLU', None)
    """
    if activation is None:
        return None
    if isinstance(activation, str):
        return _BY_KEY.get(_key(activation))
    for cls in type(activation).__mro__:
        kind = ACTIVATION_TABLE.get(cls.__name__)
        if kind is not None and getattr(nn, cls.__name__, None) is cls:
            return kind
    return None


def family(activation: nn.Module | str | None) -> str | None:
    """:data:`SATURATING`, :data:`DYING` (ReLU, ReLU6), :data:`RELU_LIKE` or None (unknown or
    none of them).

    >>> family("nn.Sigmoid"), family("LeakyReLU"), family(None)
    ('saturating', 'relu_like', None)
    """
    kind = kind_of(activation)
    return None if kind is None else kind.family


def theory_spec(module: nn.Module | None) -> tuple[str, dict[str, float]] | None:
    """``(theory name, parameters)`` for an activation module that is exactly a mean-field
    function of :mod:`gradguard.theory` (the torch class itself, with its parameters), else None.

    >>> theory_spec(nn.LeakyReLU(0.2))
    ('leaky_relu', {'negative_slope': 0.2})
    """
    if module is None:
        return None
    kind = ACTIVATION_TABLE.get(type(module).__name__)
    if kind is None or kind.theory is None or getattr(nn, kind.name) is not type(module):
        return None
    if not kind.theory_when(module):
        return None
    return kind.theory, kind.params_of(module)


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """The (low, high) bounds of a bounded activation module (both sides finite), else None."""
    name = type(module).__name__
    if name == "Hardtanh" or isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))  # type: ignore[attr-defined,arg-type]
    kind = ACTIVATION_TABLE.get(name)
    bounds = None if kind is None else kind.bounds
    if bounds is None or not all(math.isfinite(b) for b in bounds):
        return None
    return bounds


def saturation_tolerance(bounds: tuple[float, float]) -> tuple[float, float]:
    """Thresholds (low + tol, high - tol) for 'within 1% of the bounds'."""
    lo, hi = bounds
    tol = 0.01 * max(abs(lo), abs(hi), 1e-12)
    return lo + tol, hi - tol
