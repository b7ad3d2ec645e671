"""From the rings read at a flush to a :class:`~gradguard.record.batch.Batch` (host side, numpy).

The device writes per step: per-layer rows (:mod:`gradguard.keras._stats`: sums of squares, max,
non-finite counts; the weights' and the update's sums of squares on detail steps), a scalar row
(learning rate, the loss tracker's total and count before and after the step, a loss given to
``record_loss``, whether the step was a detail step) and, on detail steps, activation rows.
"""

from __future__ import annotations

import numpy as np

from gradguard.keras._stats import GMAX, GSQ, NONFINITE_ROW, USQ, WSQ
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_SAT_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_MAX,
    GRAD_NORM,
    GRAD_NORM_TOTAL,
    GRAD_RMS,
    LOSS,
    LR,
    NONFINITE,
    UPDATE_RATIO,
    WEIGHT_NORM,
)
from gradguard.record.batch import Batch, Event, Layer

__all__ = ["SCALARS", "LR_COL", "TOTAL0", "COUNT0", "TOTAL1", "COUNT1", "USER_LOSS", "DETAIL"]
__all__ += ["to_batch", "add_activations"]

# Columns of the per-step scalar ring (DETAIL: 1 on the steps that measured the weights).
LR_COL, TOTAL0, COUNT0, TOTAL1, COUNT1, USER_LOSS, DETAIL = range(7)
SCALARS = 7


def to_batch(
    rows: np.ndarray,
    scal: np.ndarray,
    steps: np.ndarray,
    numel: np.ndarray,
    events: list[Event],
    layers: list[Layer] | None,
) -> Batch:
    """``rows`` (S, ROWS, L), ``scal`` (S, SCALARS), ``steps`` (S,), ``numel`` (L,) -> Batch."""
    rows = rows.astype(np.float64)
    scal = scal.astype(np.float64)
    gsq, wsq = rows[:, GSQ], rows[:, WSQ]
    metrics = {
        GRAD_NORM: np.sqrt(gsq),
        GRAD_RMS: np.sqrt(gsq / numel),
        GRAD_MAX: rows[:, GMAX],
        NONFINITE: rows[:, NONFINITE_ROW],
    }
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {m: (steps, v) for m, v in metrics.items()}
    detail = scal[:, DETAIL] == 1  # weight norm and update ratio: detail steps only
    if detail.any():
        at, w = steps[detail], np.sqrt(wsq[detail])
        out[WEIGHT_NORM] = (at, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[UPDATE_RATIO] = (at, np.sqrt(rows[detail, USQ]) / w)
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = {
        LR: (steps, scal[:, LR_COL]),
        GRAD_NORM_TOTAL: (steps, np.sqrt(gsq.sum(axis=1))),
    }
    # the step's loss: the tracker's total and count moved by this step's batch alone
    with np.errstate(divide="ignore", invalid="ignore"):
        fit_loss = (scal[:, TOTAL1] - scal[:, TOTAL0]) / (scal[:, COUNT1] - scal[:, COUNT0])
    loss = np.where(np.isnan(scal[:, USER_LOSS]), fit_loss, scal[:, USER_LOSS])
    if np.isfinite(loss).any() or np.isnan(scal[:, TOTAL1]).sum() < len(loss):
        scalars[LOSS] = (steps, loss)
    return Batch(metrics=out, scalars=scalars, events=events, layers=layers)


ACT_GRAD_ROW = 4  # the row of ||dL/dh|| in the activation ring (gradguard.keras._activations)


def add_activations(batch: Batch, acts: np.ndarray, steps: np.ndarray) -> None:
    """The ACT_* metrics of the detail steps into ``batch``: ``acts`` (S, ACT_ROWS, L)."""
    acts = acts.astype(np.float64)
    detail = ~np.all(np.isnan(acts[:, 0]), axis=1)
    if detail.any():
        for row, metric in enumerate((ACT_MEAN, ACT_STD, ACT_ZERO_FRAC, ACT_SAT_FRAC)):
            batch.metrics[metric] = (steps[detail], acts[detail, row])
        # ||dL/dh||: NaN everywhere where no loss was compiled (nothing recorded then)
        grad = acts[detail, ACT_GRAD_ROW]
        if not np.all(np.isnan(grad)):
            batch.metrics[ACT_GRAD_NORM] = (steps[detail], grad)
