"""Online diagnosis: the rules on the run so far, each problem reported once (again if it worsens).

:class:`OnlineDiagnosis` is a sink (``gradguard.sinks.Sink``) that ``gg.watch`` feeds at each flush
(``WatchConfig.diagnose_online``): it runs :func:`new_findings` on the first and last steps of the
run log, logs and warns once per new finding, hands it back as an event through the same batch path
as everything else recorded (run log, store, sinks) and calls ``on_finding``.

What counts as "the same problem" is the finding's :func:`key`: its kind, and whether it is about
layers or about the whole run (``exploding_gradients`` over depth names layers, over time it
does not: two problems). The layers themselves are not part of the key: saturation that spreads
from 5 to 6 to 7 layers is reported once, not three times. A problem is reported again only
when its severity rises (warning -> critical).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

from gradguard.diagnosis.coherence import reconcile
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding, Severity
from gradguard.diagnosis.view import RunView
from gradguard.record.batch import Batch, Event, Layer
from gradguard.record.failures import user_stacklevel
from gradguard.runs.log import RunLog
from gradguard.runs.run import Run

__all__ = ["OnlineDiagnosis", "new_findings", "finding_event", "key", "ONLINE_RULES"]

log = logging.getLogger("gradguard")

# Every rule is a few numpy reductions over the recorded arrays: all of them are cheap enough.
ONLINE_RULES = (
    "nonfinite",
    "exploding_gradients",
    "vanishing_gradients",
    "saturation",
    "dead_units",
    "divergence",
    "stalled_learning",
)


def key(f: Finding) -> tuple[str, str]:
    """What identifies a problem across flushes: ``(kind, "layers" | "run")``."""
    return (f.kind, "layers" if f.layers else "run")


def new_findings(
    run: Run,
    seen: dict[tuple[str, str], Severity],
    *,
    config: DiagnosisConfig | None = None,
) -> list[Finding]:
    """Findings of severity >= warning on ``run`` not reported before at that severity.

    A finding is new when its :func:`key` is not in ``seen``, or when its severity is above the
    one recorded there (an escalation). When one evaluation gives several findings with the same
    key, only the most severe is returned.

    Args:
        run: the run so far (``Monitor.run``, or the bounded tail the Monitor builds).
        seen: the most severe level reported so far per key; updated with the returned findings.
        config: thresholds (defaults when None).

    Returns:
        The new findings, most severe first.

    >>> seen = {}; new = new_findings(mon.run, seen)   # doctest: +SKIP
    """
    from gradguard.diagnosis.rules import RULES

    config = config or DiagnosisConfig()
    view = RunView(run.bounded(config.start_steps, config.online_window), config)
    found = [
        f
        for f in reconcile([f for kind in ONLINE_RULES for f in RULES[kind](view)])
        if f.severity >= Severity.WARNING
    ]
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: -f.severity.rank):  # stable: rule order within a level
        k = key(f)
        if k not in seen or f.severity > seen[k]:
            seen[k] = f.severity
            out.append(f)
    return out


def finding_event(f: Finding) -> Event:
    """A finding as the event that records it in a run (kind ``finding:<kind>``)."""
    return Event(
        step=f.steps[1] if f.steps else None,
        kind=f"finding:{f.kind}",
        layer=f.layers[0] if f.layers else None,
        message=str(f),
        data={"finding": f.to_dict()},
    )


class OnlineDiagnosis:
    """A sink that diagnoses the run so far at each flush and reports each new problem once.

    Args:
        run_log: the live run's log (its head and tail are what the rules judge).
        emit: hands a batch of finding events back into the recording path (run log, store, sinks).
        config: the thresholds (``gg.watch(diagnosis=...)``).
        on_finding: called with each new finding of severity >= warning.
    """

    def __init__(
        self,
        run_log: RunLog,
        emit: Callable[[Batch], None],
        config: DiagnosisConfig,
        on_finding: Callable[[Finding], None] | None = None,
    ) -> None:
        self.run_log = run_log
        self.emit = emit
        self.config = config
        self.on_finding = on_finding
        self.seen: dict[tuple[str, str], Severity] = {}  # online key -> severity reported

    def write(self, batch: Batch, layers: Sequence[Layer]) -> None:
        if not (batch.metrics or batch.scalars):
            return  # only events (its own findings among them): nothing new to judge
        run = self.run_log.tail(self.config.start_steps, self.config.online_window, layers)
        found = new_findings(run, self.seen, config=self.config)
        for f in found:
            msg = f"gradguard: {f.severity.value} {f.kind}: {f.evidence}"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=user_stacklevel())
        if found:
            self.emit(Batch(events=[finding_event(f) for f in found]))
        if self.on_finding is not None:
            for f in found:
                self.on_finding(f)

    def close(self) -> None:
        """Nothing to release."""
