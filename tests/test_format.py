"""The one number formatter (show, check, the HTML report and a finding's evidence)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradguard.format import MISSING, number, percent


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, MISSING),
        (math.nan, MISSING),
        (np.float32("nan"), MISSING),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (0.0, "0"),
        (-0.0, "0"),
        (0, "0"),
        (3, "3"),
        (12.3456, "12.3"),
        (-12.3456, "-12.3"),
        (1e-3, "0.001"),  # the lower bound of plain notation is inside it
        (9.99e-4, "9.99e-04"),
        (9999.0, "9999"),  # fixed notation up to 1e4, never fewer digits than the integer part
        (1234.5, "1234"),
        (999.7, "1000"),
        (9999.5, "1.00e+04"),  # rounds to 1e4: scientific, as 1e4 itself
        (1e4, "1.00e+04"),  # the upper bound is outside it
        (2.5e31, "2.50e+31"),
        (np.float64(0.5), "0.5"),
        (123456789, "123456789"),  # an integer prints whole
        (np.int64(7), "7"),
        (0.0999999, "0.1"),
    ],
)
def test_number(x: object, text: str) -> None:
    assert number(x) == text  # type: ignore[arg-type]


def test_number_digits() -> None:
    assert number(math.pi, digits=5) == "3.1416"
    assert number(2.5e-7, digits=2) == "2.5e-07"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.5, "50%"),
        (0.1234, "12.3%"),
        (0.0004, "0.04%"),
        (1.0, "100%"),
        (None, MISSING),
        (math.nan, MISSING),
    ],
)
def test_percent(x: float | None, text: str) -> None:
    assert percent(x) == text
