"""Pieces both trainer callbacks share: finding the torch optimizer, closures, end-of-run findings."""

from __future__ import annotations

import logging
from typing import Any

import torch

from gradguard.diagnosis import diagnose
from gradguard.diagnosis.finding import Finding
from gradguard.diagnosis.online import finding_event
from gradguard.errors import GradguardError
from gradguard.record.batch import Batch
from gradguard.watching import Monitor

__all__ = ["unwrap_optimizer", "run_closure_first", "final_findings"]

log = logging.getLogger("gradguard")


def unwrap_optimizer(opt: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a trainer's wrapper (LightningOptimizer, accelerate's AcceleratedOptimizer)."""
    seen = 0
    while not _is_plain(opt) and isinstance(getattr(opt, "optimizer", None), torch.optim.Optimizer):
        opt = opt.optimizer
        seen += 1
        if seen > 8:
            break
    if not isinstance(opt, torch.optim.Optimizer):
        raise GradguardError(
            f"cannot find a torch.optim.Optimizer in {type(opt).__name__}; "
            "configure a torch optimizer in the trainer"
        )
    return opt


def _is_plain(opt: Any) -> bool:
    # A wrapper keeps the real optimizer in .optimizer; a plain torch optimizer does not.
    return isinstance(opt, torch.optim.Optimizer) and not isinstance(
        getattr(opt, "optimizer", None), torch.optim.Optimizer
    )


def run_closure_first(optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Optimizer step pre-hook: evaluate a step closure now, and hand the step its result.

    Lightning's automatic optimization calls ``optimizer.step(closure=...)``: forward and backward
    run *inside* the step, after the step pre-hooks, where the Monitor reads the gradients. Running
    the closure in a pre-hook registered before the Monitor's makes the gradients final by then; the
    optimizer then gets a closure that returns the same result. Optimizers that evaluate the closure
    several times (LBFGS) are left alone.
    """
    if type(optimizer).__name__ == "LBFGS":
        return None
    closure = kwargs.get("closure")
    in_args = closure is None and bool(args) and callable(args[0])
    if in_args:
        closure = args[0]
    if closure is None:
        return None
    with torch.enable_grad():
        result = closure()

    def done() -> Any:
        return result

    if in_args:
        return (done, *args[1:]), kwargs
    return args, {**kwargs, "closure": done}


def final_findings(monitor: Monitor, *, show: bool) -> list[Finding]:
    """Diagnose everything the Monitor recorded, record new findings as events, print them if asked."""
    monitor.flush()
    try:
        findings = list(diagnose(monitor.run))
    except Exception as e:  # the training is over; a failing rule must not turn it into a crash
        log.warning(
            "gradguard: diagnosis failed at the end of the run (%s: %s)", type(e).__name__, e
        )
        return []
    seen = {(e.kind, e.message) for e in monitor.run.events}
    events = [ev for ev in map(finding_event, findings) if (ev.kind, ev.message) not in seen]
    if events:
        monitor.publish(Batch(events=events), wait=False)
    if show and monitor.reducer.is_writer:
        if findings:
            print(f"gradguard: {len(findings)} finding(s) for run {monitor.run_name!r}:")
            for f in findings:
                print(f)
        else:
            print(f"gradguard: no findings for run {monitor.run_name!r}")
    return findings
