"""Diagnosis: from recorded statistics to findings with evidence, cause and ranked remedies.

>>> import gradguard as gg
>>> for f in gg.diagnose(gg.load("runs/exp.db")):   # doctest: +SKIP
...     print(f)
"""

from __future__ import annotations

from gradguard.diagnosis._diagnose import diagnose
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding, Remedy, Severity
from gradguard.diagnosis.knowledge import remedies_for

__all__ = ["diagnose", "DiagnosisConfig", "Finding", "Severity", "Remedy", "remedies_for"]
