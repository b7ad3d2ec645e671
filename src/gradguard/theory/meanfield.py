"""Mean-field signal propagation in deep random networks (Poole et al. 2016; Schoenholz et al. 2017).

For h_l = W_l phi(h_{l-1}) + b_l with W_ij ~ N(0, sigma_w^2 / N) and b_i ~ N(0, sigma_b^2):

    length map       q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2          -> q*
    chi_1            = sigma_w^2 E[phi'(sqrt(q*) z)^2]   (per-layer gain of squared gradient norms)
    correlation map  c_l = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*       -> c*
    depth scales     xi_q = -1 / ln(chi_q),  chi_q = d q_l / d q_{l-1} at q*
                     xi_c = -1 / ln(chi_c),  chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at c*

chi_1 < 1: ordered (gradients vanish, inputs become alike), chi_1 > 1: chaotic (gradients explode,
nearby inputs decorrelate), chi_1 = 1: critical (xi_c diverges; trainable at any depth).
Fixed points are solved for (bracketing + Brent), never iterated, so q* stays unbiased near the
critical line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gradguard.errors import GradguardError
from gradguard.theory import _gauss as G
from gradguard.theory._solve import root
from gradguard.theory.activations import ActivationFn, ActivationLike, resolve_activation

__all__ = ["MeanField", "mean_field", "chi1", "critical_sigma_w2", "phase", "solve_q_star"]

CRITICAL_TOL = 1e-6  # |chi_1 - 1| below this is called critical
_Q_TINY = 1e-200  # evaluate "at q = 0" here (keeps the split at kinks meaningful)
_Q_MAX = 1e12  # no fixed point below this: the length map diverges
_VAR_MAX = 1e100  # largest sigma_w2 / sigma_b2 accepted


@dataclass(frozen=True)
class MeanField:
    """Mean-field description of one (activation, sigma_w^2, sigma_b^2) point.

    Args:
        activation: the activation's name.
        sigma_w2, sigma_b2: weight variance times fan-in, and bias variance.
        q_star: fixed point of the length map (0: the origin attracts; inf: it diverges;
            nan: every q is a fixed point).
        chi_1: sigma_w^2 E[phi'(sqrt(q*) z)^2]; the per-layer factor of squared gradient norms.
        c_star: stable fixed point of the correlation map (nan where undefined, see note).
        chi_c: slope of the correlation map at c_star.
        xi_q, xi_c: depth scales over which lengths and correlations approach their fixed points.
        phase: "ordered", "critical" or "chaotic".
        note: how an edge case was handled ("" for the regular case).
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    chi_1: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    phase: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (non-finite numbers become strings 'inf' / 'nan')."""
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
            for k, v in asdict(self).items()
        }


def _check(sigma_w2: float, sigma_b2: float) -> tuple[float, float]:
    sw, sb = float(sigma_w2), float(sigma_b2)
    if not (math.isfinite(sw) and math.isfinite(sb)) or sw < 0 or sb < 0:
        raise GradguardError(
            f"sigma_w2={sigma_w2!r} and sigma_b2={sigma_b2!r} must be finite and >= 0 "
            "(they are variances: sigma_w2 = fan_in * Var(W), sigma_b2 = Var(b))"
        )
    if max(sw, sb) > _VAR_MAX:  # closed forms and quadratures overflow beyond this
        raise GradguardError(
            f"sigma_w2={sigma_w2!r} and sigma_b2={sigma_b2!r} must be <= {_VAR_MAX:g}; variances "
            "that large are far outside any trainable network (a bounded activation is deeply "
            "chaotic there, chi_1 ~ sqrt(sigma_w2))"
        )
    return sw, sb


def _depth(chi: float) -> float:
    if not math.isfinite(chi):
        return math.nan
    if chi <= 0:
        return 0.0
    if chi >= 1.0 - 1e-9:
        return math.inf
    return -1.0 / math.log(chi)


def _phase(chi_1: float) -> str:
    if abs(chi_1 - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi_1 < 1.0 else "chaotic"


def solve_q_star(act: ActivationFn, sw: float, sb: float) -> tuple[float, str]:
    """Fixed point of the length map and a note on edge cases.

    Returns the smallest stable fixed point reached from small q; 0.0 when the origin attracts
    (sigma_b^2 = 0 and the map's slope there is <= 1), inf when there is none, nan when every q is
    one (positively homogeneous phi with sigma_w^2 E[phi(z)^2] = 1 and sigma_b^2 = 0).
    """
    if sw == 0.0:
        return sb, ""
    if act.homogeneous is not None:  # length map is linear: q -> sw * m * q + sb
        slope = sw * act.homogeneous
        if abs(slope - 1.0) <= 1e-12:
            if sb == 0.0:
                return math.nan, (
                    "sigma_w2 * E[phi(z)^2] = 1 with sigma_b2 = 0: every q is a fixed point "
                    "(the length is preserved exactly, as with He init for relu)"
                )
            return math.inf, "length map slope is 1 and sigma_b2 > 0: q grows by sigma_b2 per layer"
        if slope > 1.0:
            return math.inf, (
                f"no finite q*: the length map grows by a factor {slope:.4g} per layer "
                f"(needs sigma_w2 < {1 / act.homogeneous:.4g})"
            )
        if sb == 0.0:
            return 0.0, "sigma_b2 = 0 and length-map slope < 1: the origin attracts, q* = 0"
        return sb / (1.0 - slope), ""

    def g(q: float) -> float:
        return float(sw * G.m2(act, q)[0] + sb - q)

    phi0 = float(act.fn(np.zeros(1))[0])
    lo = sb
    if sb == 0.0 and phi0 == 0.0:
        slope0 = sw * float(G.m2(act, 1e-12)[0]) / 1e-12
        if slope0 <= 1.0 + 1e-9:
            note = "sigma_b2 = 0 and phi(0) = 0: the origin attracts, q* = 0"
            if abs(slope0 - 1.0) <= 1e-9:
                note += " (marginally: q decays as a power law, not exponentially)"
            return 0.0, note
        lo = 1e-10
    if lo <= 0.0:
        lo = 1e-10
    top = _Q_MAX
    far = np.abs(act.fn(np.array([-1e8, 1e8])))
    if np.all(
        far <= 1e3
    ):  # bounded phi (tanh, sigmoid, erf...): q* <= sigma_w2 max phi^2 + sigma_b2
        top = max(top, 4.0 * (sw * float(far.max()) ** 2 + sb))
    top = max(top, 10.0 * lo)
    grid = np.geomspace(lo, top, int(4 * (math.log10(top) - math.log10(lo))) + 2)
    vals = sw * G.m2(act, grid) + sb - grid
    neg = np.nonzero(vals <= 0.0)[0]
    if neg.size == 0:
        return (
            math.inf,
            f"no fixed point of the length map below q = {top:g}: signals grow without bound",
        )
    i = int(neg[0])
    if vals[i] == 0.0:
        return float(grid[i]), ""
    if i == 0:  # g(lo) <= 0 already (degenerate phi == 0 almost everywhere)
        return float(lo), ""
    return root(g, float(grid[i - 1]), float(grid[i])), ""


def _chi1_at(act: ActivationFn, sw: float, q: float) -> float:
    if math.isnan(q):  # homogeneous: chi_1 does not depend on q
        q = 1.0
    if math.isinf(q):  # large-q limit: E[phi'(sqrt(q) z)^2] -> (phi'(+inf)^2 + phi'(-inf)^2) / 2
        if act.homogeneous is not None:
            q = 1.0
        else:
            far = act.deriv(np.array([-1e8, 1e8]))
            return float(sw * 0.5 * (far[0] ** 2 + far[1] ** 2))
    if q > _Q_MAX and act.closed_form is None:
        far = act.deriv(np.array([-1e8, 1e8]))
        if np.all(far == 0.0):  # phi' lives on a width << sqrt(q): the quadrature cannot see it
            u = np.linspace(-60.0, 60.0, 600_001)
            area = float(np.sum(act.deriv(u) ** 2) * (u[1] - u[0]))  # integral of phi'^2
            return float(sw * area / math.sqrt(2.0 * math.pi * q))
    return float(sw * G.d2(act, max(float(q), _Q_TINY))[0])


def chi1(activation: ActivationLike, sigma_w2: float, sigma_b2: float) -> float:
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] (cheaper than :func:`mean_field`: no correlation map).

    >>> round(chi1("relu", 2.0, 0.0), 12)
    1.0
    """
    act = resolve_activation(activation)
    sw, sb = _check(sigma_w2, sigma_b2)
    q, _ = solve_q_star(act, sw, sb)
    return _chi1_at(act, sw, q)


def phase(activation: ActivationLike, sigma_w2: float, sigma_b2: float) -> str:
    """'ordered' (chi_1 < 1), 'critical' (|chi_1 - 1| <= 1e-6) or 'chaotic' (chi_1 > 1)."""
    return _phase(chi1(activation, sigma_w2, sigma_b2))


def _c_star(act: ActivationFn, sw: float, sb: float, q: float, chi_1: float) -> tuple[float, float]:
    """Stable fixed point of the correlation map and the map's slope there (q finite, > 0)."""
    if chi_1 <= 1.0 + CRITICAL_TOL:
        return 1.0, chi_1  # c = 1 is stable

    def h(c: float) -> float:
        return float((sw * G.k(act, q, c)[0] + sb) / q - c)

    top = None
    for delta in (1e-2, 1e-3, 1e-4, 1e-6):
        if h(1.0 - delta) < 0.0:
            top = 1.0 - delta
            break
    if top is None:  # pragma: no cover - chi_1 > 1 guarantees h < 0 just below 1
        return math.nan, math.nan
    # h(-1) >= 0 (Cauchy-Schwarz), so a root lies below `top`; scan down for the largest one.
    # (|h| tiny counts as a root: odd phi with sigma_b^2 = 0 has c* = 0 exactly.)
    c = math.nan
    for below in (0.9, 0.7, 0.4, 0.0, -0.4, -0.8, -1.0):
        if below >= top:
            continue
        hb = h(below)
        if abs(hb) <= 1e-12:
            c = below
            break
        if hb > 0.0:
            c = root(h, below, top, rtol=1e-12)
            break
        top = below
    if math.isnan(c):  # pragma: no cover
        return math.nan, math.nan
    return c, float(sw * G.kd(act, q, c)[0])


def mean_field(activation: ActivationLike, sigma_w2: float, sigma_b2: float) -> MeanField:
    """Fixed points, chi_1, depth scales and phase for one point of the phase diagram.

    Args:
        activation: a name (tanh, sigmoid, relu, leaky_relu, elu, gelu, selu, erf, hard_tanh,
            linear), an :class:`ActivationFn`, or an elementwise callable (numerical integration).
        sigma_w2: fan_in * Var(W).
        sigma_b2: Var(b).

    Returns:
        A :class:`MeanField`.

    Raises:
        GradguardError: unknown activation or a negative / non-finite variance.

    >>> mf = mean_field("tanh", 1.0, 0.0)
    >>> mf.phase, mf.q_star
    ('critical', 0.0)
    """
    act = resolve_activation(activation)
    sw, sb = _check(sigma_w2, sigma_b2)
    q, note = solve_q_star(act, sw, sb)
    chi_1 = _chi1_at(act, sw, q)
    # slope of the length map at q*
    if act.homogeneous is not None:
        chi_q = sw * act.homogeneous
    elif q == 0.0:
        chi_q = sw * float(G.m2(act, 1e-12)[0]) / 1e-12
    elif math.isfinite(q):
        chi_q = sw * float(G.dm2(act, q)[0])
    else:
        chi_q = math.nan
    if math.isfinite(q) and q > 0.0:
        c_star, chi_c = _c_star(act, sw, sb, q, chi_1)
    elif act.closed_form in ("relu", "leaky_relu") and (sb == 0.0 or math.isinf(q)):
        # bias-free (or bias-negligible) relu: the normalised correlation map is q-free and
        # touches c = 1 with slope 1, so correlations converge only as a power law
        c_star, chi_c = 1.0, 1.0
        note += "; correlations approach c* = 1 as a power law (xi_c = inf)"
    else:
        c_star, chi_c = math.nan, math.nan
        if note:
            note += "; the correlation map is undefined without a finite, positive q*"
    if abs(chi_1 - 1.0) <= CRITICAL_TOL and math.isfinite(chi_c):
        chi_c = 1.0
    return MeanField(
        activation=act.name,
        sigma_w2=sw,
        sigma_b2=sb,
        q_star=float(q),
        chi_1=chi_1,
        c_star=float(c_star),
        chi_c=float(chi_c),
        xi_q=_depth(chi_q),
        xi_c=_depth(chi_c),
        phase=_phase(chi_1),
        note=note.lstrip("; "),
    )


def critical_sigma_w2(activation: ActivationLike, sigma_b2: float = 0.0) -> float:
    """The sigma_w^2 where chi_1 crosses 1 (the order-to-chaos transition) at this sigma_b^2.

    For bounded activations chi_1 passes through 1 continuously. For unbounded non-homogeneous
    ones (gelu, elu, selu with a bias) the length map's fixed point can vanish in a saddle-node
    instead: q* jumps to infinity and chi_1 jumps over 1; the boundary of that jump is returned.
    For relu, leaky_relu and linear it is 1 / E[phi'(z)^2] (e.g. 2 for relu) at any sigma_b^2.

    Raises:
        GradguardError: if chi_1 never crosses 1 for sigma_w^2 in (0, 1e4].

    >>> round(critical_sigma_w2("relu"), 12)
    2.0
    """
    act = resolve_activation(activation)
    _, sb = _check(1.0, sigma_b2)
    if act.homogeneous is not None:
        d = float(G.d2(act, 1.0)[0])  # chi_1 = sigma_w^2 * d, independent of q
        return 1.0 / d

    def f(sw: float) -> float:
        q, _ = solve_q_star(act, sw, sb)
        return _chi1_at(act, sw, q) - 1.0

    lo, hi = 1e-3, 1.0
    while f(hi) < 0.0:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise GradguardError(
                f"{act.name} has no order-to-chaos transition for sigma_w2 <= 1e4 at "
                f"sigma_b2={sb:g}; chi_1 stays below 1 (pick another activation or sigma_b2)"
            )
    if f(lo) > 0.0:
        raise GradguardError(
            f"{act.name} is already chaotic at sigma_w2=1e-3, sigma_b2={sb:g}; no critical sigma_w2"
        )
    return root(f, lo, hi, rtol=1e-12)
