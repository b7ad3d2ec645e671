"""Small helpers shared by the rule files."""

from __future__ import annotations

from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Severity

__all__ = ["grade", "downgrade"]


def grade(ratio: float, config: DiagnosisConfig) -> Severity | None:
    """Severity of a depth ratio (>= 1): None below depth_info."""
    if not ratio >= config.depth_info:  # also False for NaN
        return None
    if ratio >= config.depth_critical:
        return Severity.CRITICAL
    if ratio >= config.depth_warning:
        return Severity.WARNING
    return Severity.INFO


def downgrade(s: Severity) -> Severity:
    return {Severity.CRITICAL: Severity.WARNING}.get(s, Severity.INFO)
