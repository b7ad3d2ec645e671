"""One way to print a number, used by ``gradguard show``, ``gradguard check``, the HTML report and
the evidence of a finding, so the same value reads the same everywhere."""

from __future__ import annotations

import math

__all__ = ["number", "MISSING"]

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
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"
