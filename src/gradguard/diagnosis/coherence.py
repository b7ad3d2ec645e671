"""One story per run: findings that would contradict each other are reconciled.

The rules judge one question each; a few of their answers can only be read together:

- **vanishing and exploding over the same depth axis** (e.g. the start of the run vanishes, the
  recent window or the forward activations grow): the stronger effect (the larger |log10| of the
  first/last ratio) is reported, the other is dropped and named in its evidence.
- **a gradient norm that grows or jumps while a vanishing net escapes its initialisation**: the
  first steps' norms are tiny, so any later norm looks like growth or a spike. When the norm only
  rose to the run's typical level (within ``spike_ratio`` of its median: the rule's ``recovery``
  flag; weights that grew from a tiny init count alike), and the loss neither diverged nor became
  non-finite, this is recovery, not an explosion: it is folded into the vanishing finding's
  evidence.

- **weights that grow while the loss keeps improving** (cross-entropy logits grow as the loss goes
  to zero; a tiny init grows back): without a growing gradient, a warning-level spike or a broken
  loss, weight growth alone is an info note.

Used by :func:`gradguard.diagnosis.diagnose` and by online diagnosis, so both tell the same story.
"""

from __future__ import annotations

import math
from dataclasses import replace

from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.rules import divergence, nonfinite

__all__ = ["reconcile"]

_VANISHING = "vanishing_gradients"
_EXPLODING = "exploding_gradients"


def _magnitude(f: Finding) -> float:
    """|log10| of a depth finding's first/last ratio (forward growth counts for exploding)."""
    vals = [f.data.get("ratio_first_last"), f.data.get("forward_ratio")]
    logs = [abs(math.log10(v)) for v in vals if isinstance(v, float) and v > 0 and math.isfinite(v)]
    return max(logs, default=0.0)


def _weights_only(f: Finding) -> bool:
    """An over-time exploding finding whose only warning-level sign is weight growth."""
    d = f.data
    grew = float(d.get("growth", 0.0) or 0.0) >= float(d.get("growth_warning", math.inf))
    spiked = bool(d.get("spike_warned"))
    return bool(d.get("weight_growth")) and not grew and not spiked


def reconcile(findings: list[Finding]) -> list[Finding]:
    """The findings with contradictions resolved (order kept)."""
    loss_broke = any(
        f.kind in (divergence.KIND, nonfinite.KIND) and f.severity >= Severity.WARNING
        for f in findings
    )
    if not loss_broke:  # weights that grew while the loss kept improving: a note, not an alarm
        findings = [
            replace(
                f,
                severity=Severity.INFO,
                evidence=f"{f.evidence} (the loss kept improving and the gradient did not grow)",
            )
            if f.kind == _EXPLODING
            and not f.layers
            and f.severity > Severity.INFO
            and _weights_only(f)
            else f
            for f in findings
        ]
    vanishing = next((f for f in findings if f.kind == _VANISHING), None)
    if vanishing is None:
        return list(findings)
    notes: list[str] = []
    drop: set[int] = set()
    for f in findings:
        if f.kind != _EXPLODING:
            continue
        if f.layers:  # over depth
            if _magnitude(f) > _magnitude(vanishing):
                drop.add(id(vanishing))
                f_note = (
                    f"(the gradient also shrinks toward the input elsewhere: {vanishing.evidence})"
                )
                findings = [
                    replace(x, evidence=f"{x.evidence}; {f_note}") if x is f else x
                    for x in findings
                ]
            else:
                drop.add(id(f))
                notes.append(f"the depth profile grows elsewhere ({f.evidence})")
        elif not loss_broke and f.data.get("recovery"):  # the norm only rose to its usual level
            drop.add(id(f))
            notes.append(
                f"the total gradient then grew as training left the initialisation ({f.evidence}); "
                "with the loss still falling this is recovery, not an explosion"
            )
    out = []
    for f in findings:
        if id(f) in drop:
            continue
        if f.kind == _VANISHING and notes:
            f = replace(f, evidence="; ".join([f.evidence, *notes]))
        out.append(f)
    return out
