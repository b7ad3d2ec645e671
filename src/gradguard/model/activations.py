"""Activation modules: which kinds gradguard knows, and the bounds of the bounded ones."""

from __future__ import annotations

from torch import nn

__all__ = ["ACTIVATION_BOUNDS", "ACTIVATION_KINDS", "activation_bounds", "saturation_tolerance"]

# Activations whose outputs are bounded, and their bounds: a unit is "saturated" when its output lies
# within 1% of a bound (relative to the bound's magnitude, or of the range when the bound is 0).
ACTIVATION_BOUNDS: dict[str, tuple[float, float]] = {
    "Tanh": (-1.0, 1.0),
    "Sigmoid": (0.0, 1.0),
    "Hardsigmoid": (0.0, 1.0),
    "Softsign": (-1.0, 1.0),
    "Hardtanh": (-1.0, 1.0),
    "ReLU6": (0.0, 6.0),
    "LogSigmoid": (float("-inf"), 0.0),
}

# Elementwise activation modules that may follow a layer; their output is where activation
# statistics (zero and saturated fractions) mean something.
ACTIVATION_KINDS = frozenset(
    {
        *ACTIVATION_BOUNDS,
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "RReLU",
        "ELU",
        "CELU",
        "SELU",
        "GELU",
        "SiLU",
        "Mish",
        "Softplus",
        "Hardswish",
        "Tanhshrink",
        "Softshrink",
        "Hardshrink",
        "Threshold",
    }
)


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """The (low, high) bounds of a bounded activation module, else None."""
    kind = type(module).__name__
    if kind == "Hardtanh" or isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))  # type: ignore[attr-defined,arg-type]
    bounds = ACTIVATION_BOUNDS.get(kind)
    if bounds is None or not all(abs(b) < float("inf") for b in bounds):
        return None
    return bounds


def saturation_tolerance(bounds: tuple[float, float]) -> tuple[float, float]:
    """Thresholds (low + tol, high - tol) for 'within 1% of the bounds'."""
    lo, hi = bounds
    tol = 0.01 * max(abs(lo), abs(hi), 1e-12)
    return lo + tol, hi - tol
