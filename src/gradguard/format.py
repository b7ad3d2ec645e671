"""One way to print a number, used by ``gradguard show``, ``gradguard check``, ``gradguard lab``,
the HTML report and the evidence of a finding, so the same value reads the same everywhere: in a
table cell, in a sentence and in an HTML cell."""

from __future__ import annotations

import math
from numbers import Integral
from typing import SupportsFloat

__all__ = ["number", "percent", "MISSING"]

MISSING = "—"  # a value that was not measured (NaN or None)


def number(x: SupportsFloat | None, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, as a table cell or a sentence shows it.

    Rules: an integer (Python or numpy) prints whole; a float in [1e-3, 1e4) in fixed notation
    with trailing zeros dropped (never fewer digits than its integer part: 1234.5 -> ``1234``);
    outside that range in scientific notation; ``inf``/``-inf``; :data:`MISSING` for None or NaN.

    >>> number(0.000123), number(12.3456), number(1234.5), number(2.5e31), number(float("nan"))
    ('1.23e-04', '12.3', '1234', '2.50e+31', '—')
    """
    if x is None:
        return MISSING
    if isinstance(x, Integral):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if not 1e-3 <= abs(x) < 9999.5:  # 9999.5 would round to 10000: 1.00e+04
        return f"{x:.{digits - 1}e}"
    # decimals that leave `digits` significant digits (none below the unit for 1e3 <= |x| < 1e4)
    s = f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def percent(x: float | None, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits; :data:`MISSING` when unknown.

    >>> percent(0.5), percent(0.1234), percent(0.0004), percent(None)
    ('50%', '12.3%', '0.04%', '—')
    """
    if x is None or not math.isfinite(float(x)):
        return MISSING
    return f"{100 * float(x):.{digits}g}%"
