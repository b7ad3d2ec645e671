"""``diagnose(run)``: run every rule, sort the findings, add ``healthy`` when none warns."""

from __future__ import annotations

from gradguard.diagnosis.coherence import reconcile
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.errors import ConfigError
from gradguard.runs.run import Run

__all__ = ["diagnose"]


def diagnose(run: Run, *, config: DiagnosisConfig | None = None) -> list[Finding]:
    """Diagnose a recorded run: findings with evidence, cause and ranked remedies.

    Args:
        run: a :class:`~gradguard.runs.store.Run` (``gg.load(path)``, ``mon.run`` or
            ``Run.from_arrays(...)``).
        config: thresholds; :class:`DiagnosisConfig` defaults when None.

    Returns:
        Findings sorted by severity (critical first, then in rule order). When no rule reports a
        warning or worse, a ``healthy`` info finding with the key numbers is included.

    >>> for f in gg.diagnose(gg.load("runs/exp.db")):   # doctest: +SKIP
    ...     print(f)
    """
    from gradguard.diagnosis.rules import RULES, healthy

    if not isinstance(run, Run):
        raise ConfigError(
            f"diagnose() needs a gradguard Run, got {type(run).__name__}; "
            "pass gg.load('runs/x.db'), mon.run or Run.from_arrays(...)"
        )
    if config is None:
        config = DiagnosisConfig()
    elif not isinstance(config, DiagnosisConfig):
        raise ConfigError(
            f"config must be a DiagnosisConfig, got {type(config).__name__}; "
            "build one with gradguard.diagnosis.DiagnosisConfig(...)"
        )
    view = RunView(run, config)
    findings: list[Finding] = []
    for check in RULES.values():
        findings.extend(check(view))
    findings = reconcile(findings)
    if not any(f.severity >= Severity.WARNING for f in findings):
        findings.extend(healthy.check(view))
    order = {id(f): i for i, f in enumerate(findings)}
    return sorted(findings, key=lambda f: (-f.severity.rank, order[id(f)]))
