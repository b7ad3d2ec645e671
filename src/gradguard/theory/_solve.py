"""Bracketed scalar root finding: scipy's brentq when installed, bisection otherwise."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["root"]


def root(f: Callable[[float], float], a: float, b: float, *, rtol: float = 1e-13) -> float:
    """A root of f in [a, b] where f(a) and f(b) differ in sign.

    Solving for the fixed point (instead of iterating the map to convergence) is what keeps q*
    unbiased near the critical line, where iteration converges arbitrarily slowly.
    """
    try:
        from scipy.optimize import brentq
    except ImportError:  # pragma: no cover - scipy is in the `theory` extra
        fa = f(a)
        for _ in range(200):
            m = 0.5 * (a + b)
            fm = f(m)
            if fm == 0 or abs(b - a) <= rtol * abs(m):
                return m
            if (fm > 0) == (fa > 0):
                a, fa = m, fm
            else:
                b = m
        return 0.5 * (a + b)
    return float(brentq(f, a, b, xtol=1e-300, rtol=max(rtol, 4.5e-16), maxiter=200))
