"""One way to print a number, used by ``gradguard show``, ``gradguard check``, the HTML report and
the evidence of a finding, so the same value reads the same everywhere."""

from __future__ import annotations

import math

__all__ = ["number", "percent", "MISSING"]

MISSING = "—"  # a value that was not measured (NaN or None)


def number(x: float | int | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits; scientific outside [1e-3, 1e4); ``inf``/``-inf``;
    :data:`MISSING` for None or NaN.

    >>> number(0.000123), number(12.3456), number(2.5e31), number(float("nan"))
    ('1.23e-04', '12.3', '2.50e+31', '—')
    """
    if x is None:
        return MISSING
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits}g}")  # 9999 to 3 digits is 1e4: scientific, like 1e4 itself
    if 1e-3 <= abs(rounded) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def percent(x: float | None, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits; :data:`MISSING` when unknown.

    >>> percent(0.5), percent(0.1234), percent(0.0004), percent(None)
    ('50%', '12.3%', '0.04%', '—')
    """
    if x is None or not math.isfinite(float(x)):
        return MISSING
    return f"{100 * float(x):.{digits}g}%"
