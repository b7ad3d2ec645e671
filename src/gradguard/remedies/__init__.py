"""Remedies: initialisation (``init_``), gradient clippers (``clip``), a ``Guard`` for bad steps,
and ``locate_nonfinite`` to find where a NaN/Inf is born."""

from __future__ import annotations

from gradguard.remedies import clip
from gradguard.remedies.guard import Guard, GuardEvent
from gradguard.remedies.init import InitSummary, LayerInit, Scheme, init_
from gradguard.remedies.locate import NonfiniteLocation, TensorStats, locate_nonfinite

__all__ = [
    "clip",
    "init_",
    "Scheme",
    "InitSummary",
    "LayerInit",
    "Guard",
    "GuardEvent",
    "locate_nonfinite",
    "NonfiniteLocation",
    "TensorStats",
]
