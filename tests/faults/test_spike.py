"""The fault matrix's loss-spike row: one mini-batch's loss x1e6 (Adam) at step 3 of 6.

(a) same numbers, (b) the store complete, (c) the loss spike (divergence) and the gradient spike it
causes (exploding_gradients), both starting at the spike's step, (d) nothing else. A 1e6x jump is
a spike from the third recorded point on (``DiagnosisConfig.spike_extreme``), before the noise of
the loss can be estimated.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gradguard.diagnosis import Severity
from tests.faults.harness import FAULT_STEP, Case, Expect, check_row
from tests.faults.matrix import register

K = FAULT_STEP


def spike(s: int, loss: torch.Tensor) -> torch.Tensor:
    return loss * 1e6 if s == K else loss


CASE = Case(on_loss=spike, optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))
register(
    "numeric",
    "loss spike x1e6 (Adam)",
    "mlp3",
    1,
    f"(a) (b) (c) divergence and exploding_gradients from step {K} (d)",
)


def test_loss_spike(tmp_path: Path) -> None:
    findings = check_row(
        CASE, Expect("*", K), tmp_path, allow={"divergence", "exploding_gradients"}
    )
    bad = [f for f in findings if f.severity >= Severity.WARNING]
    assert {f.kind for f in bad} == {"divergence", "exploding_gradients"}
    assert all(f.steps is not None and f.steps[0] == K for f in bad)
