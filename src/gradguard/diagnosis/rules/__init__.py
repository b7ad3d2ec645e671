"""The diagnosis rules, one file each. Each exposes ``KIND`` and ``check(view) -> list[Finding]``.

``RULES`` runs in this order; ``healthy`` is not in it: :func:`gradguard.diagnosis.diagnose` adds
it when no rule reports a warning or worse.
"""

from __future__ import annotations

from collections.abc import Callable

from gradguard.diagnosis.finding import Finding
from gradguard.diagnosis.rules import (
    dead_units,
    divergence,
    exploding,
    healthy,
    nonfinite,
    saturation,
    stalled,
    vanishing,
)
from gradguard.diagnosis.view import RunView

__all__ = ["RULES", "healthy"]

RULES: dict[str, Callable[[RunView], list[Finding]]] = {
    nonfinite.KIND: nonfinite.check,
    exploding.KIND: exploding.check,
    vanishing.KIND: vanishing.check,
    saturation.KIND: saturation.check,
    dead_units.KIND: dead_units.check,
    divergence.KIND: divergence.check,
    stalled.KIND: stalled.check,
}
