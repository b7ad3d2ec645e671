"""The fault matrix's loss-spike row: one mini-batch's loss x1e6 (Adam), which no rule reports yet.

Kept apart for the lead (issue 12 asks for spike detection): the row asserts what the matrix asks,
(a) same numbers, (b) the store complete, (c) a warning-or-worse finding that starts at the
spike's step, (d) nothing else -- and (c) fails today: the run is called healthy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.faults.harness import FAULT_STEP, Case, Expect, check_row
from tests.faults.matrix import register

K = FAULT_STEP


def spike(s: int, loss: torch.Tensor) -> torch.Tensor:
    return loss * 1e6 if s == K else loss


CASE = Case(on_loss=spike, optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))
register("numeric", "loss spike x1e6 (Adam)", "mlp3", 1, f"(a) (b) (c) a finding at step {K} (d)")


def test_loss_spike(tmp_path: Path) -> None:
    check_row(CASE, Expect("*", K), tmp_path)
