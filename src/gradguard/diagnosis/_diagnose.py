"""``diagnose(run)``: run every rule, sort the findings, add ``healthy`` when none warns."""

from __future__ import annotations

from dataclasses import replace

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
    findings = reconcile(findings) + _reported_online(run, findings)
    if not any(f.severity >= Severity.WARNING for f in findings):
        findings.extend(healthy.check(view))
    order = {id(f): i for i, f in enumerate(findings)}
    return sorted(findings, key=lambda f: (-f.severity.rank, order[id(f)]))


def _reported_online(run: Run, findings: list[Finding]) -> list[Finding]:
    """Online findings (stored as ``finding:<kind>`` events) that the rules no longer see on the
    whole run -- a depth profile of an earlier window, a rise the loss has since recovered from.
    They were true of the steps they name, and a person who was warned during training must find
    the warning in the final diagnosis: each is kept (its most severe report), marked as such."""
    from gradguard.diagnosis.online import key

    have = {key(f) for f in findings if f.severity >= Severity.WARNING}
    kept: dict[tuple[str, str], Finding] = {}
    for e in run.events:
        stored = e.data.get("finding") if isinstance(e.data, dict) else None
        if not e.kind.startswith("finding:") or not isinstance(stored, dict):
            continue
        try:
            f = Finding.from_dict(stored)
        except (KeyError, ValueError, TypeError, IndexError):
            continue  # a hand-edited or foreign event: not ours to interpret
        k = key(f)
        if f.severity < Severity.WARNING or k in have:
            continue
        if k not in kept or f.severity > kept[k].severity:
            kept[k] = replace(
                f,
                evidence=f"reported online at step {e.step}, no longer seen on the whole run: "
                f"{f.evidence}",
                data={**f.data, "online_only": True},
            )
    return list(kept.values())
