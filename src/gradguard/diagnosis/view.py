"""A run as the rules see it: main layers in depth order, windows of steps, depth fits, context.

Positions (local names ``pos`` and ``main_pos``): a layer's forward position ``pos`` is its place
in ``run.layers`` and its column in every ``(steps, layers)`` array of the run (the stored
``Layer.index``). :attr:`RunView.main` lists the forward positions of the layers on the depth
axis; a ``main_pos`` is a place in that list (0 = the main layer nearest the input).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from gradguard.diagnosis._stats import log_profile, nanmedian, theil_sen, windows
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Remedy
from gradguard.diagnosis.knowledge import remedies_for
from gradguard.metrics import ACT_GRAD_NORM, GRAD_RMS, UPDATE_RATIO, Metric
from gradguard.runs.run import Run

__all__ = ["RunView", "DepthFit", "Window"]

# Steps a rule summarises: all of them, the first ones (start_steps; a depth fit: the first
# recorded step) or the recent window (the last recent_fraction of the run)
Window = Literal["all", "start", "recent"]

_RECURRENT = {"RNN", "RNNCell"}  # vanilla recurrences (LSTM/GRU are the remedy)
_SIDE_KINDS = ("Norm", "Embedding")  # layers whose statistics are not on the depth axis


def _pow10(x: float) -> float:
    """10**x that saturates to inf / 0 instead of raising OverflowError."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.power(10.0, x))


@dataclass(frozen=True)
class DepthFit:
    """A log-linear fit of a per-layer statistic against depth, over one window of steps.

    ``per_layer`` is the factor between neighbouring layers going *toward the input*
    (>1: grows backward = exploding, <1: shrinks = vanishing); ``gain`` is the fitted ratio first
    layer / last layer over the ``n`` layers; ``first``/``last`` are the medians measured there.
    """

    metric: Metric
    per_layer: float
    gain: float
    n: int
    first: float
    last: float
    steps: tuple[int, int]
    zero_layers: tuple[int, ...]  # main_pos of the layers with exactly zero values

    @property
    def ok(self) -> bool:
        return math.isfinite(self.gain) and self.n >= 2


class RunView:
    """Precomputed, crash-free views of a :class:`~gradguard.runs.store.Run` for the rules."""

    def __init__(self, run: Run, config: DiagnosisConfig) -> None:
        self.run = run
        self.config = config
        self.names = [lay.name for lay in run.layers]

    # ------------------------------------------------------------------ layers
    @cached_property
    def main(self) -> list[int]:
        """Columns of the layers on the depth axis (the commonest non-norm kind), in forward
        order."""
        layers = self.run.layers
        kinds = [lay.kind for lay in layers if not any(s in lay.kind for s in _SIDE_KINDS)]
        if not kinds:
            return list(range(len(layers)))
        common = Counter(kinds).most_common()
        top = common[0][1]
        chosen = {k for k, c in common if c == top}
        main = [pos for pos, lay in enumerate(layers) if lay.kind in chosen]
        if len(main) >= 2:
            return main
        return [pos for pos, lay in enumerate(layers) if lay.kind in kinds]

    def layer_names(self, positions: list[int] | np.ndarray) -> tuple[str, ...]:
        """The names of the layers at these forward positions."""
        return tuple(self.names[int(pos)] for pos in positions)

    # ------------------------------------------------------------------ metrics
    def metric(self, name: Metric) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values[S, L])`` with rows where every value is NaN removed."""
        steps, vals = self.run.metric(name)
        vals = np.asarray(vals, dtype=np.float64)
        if vals.ndim != 2 or vals.shape[1] != len(self.names) or len(steps) != vals.shape[0]:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.names)))
        keep = ~np.all(np.isnan(vals), axis=1) if vals.size else np.zeros(0, dtype=bool)
        return np.asarray(steps)[keep], vals[keep]

    def scalar(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values[S])`` in step order; ``name`` is a declared scalar or a user's own."""
        steps, vals = self.run.scalar(name)
        vals = np.asarray(vals, dtype=np.float64).reshape(-1)
        steps = np.asarray(steps).reshape(-1)
        if len(steps) != len(vals):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        order = np.argsort(steps, kind="stable")
        return steps[order], vals[order]

    def depth_fit(self, name: Metric, window: Literal["start", "recent"]) -> DepthFit | None:
        """Fit log10(metric) over the main layers at the first recorded step ("start") or over
        the recent window (median per layer over the last ``recent_fraction`` of the steps)."""
        steps, vals = self.metric(name)
        main = self.main
        if len(steps) == 0 or len(main) < self.config.min_depth_layers:
            return None
        order = np.argsort(steps, kind="stable")
        steps, vals = steps[order], vals[order][:, main]
        # "start" is the first recorded step (initialisation): training can heal a bad init
        # within a few steps, so a median over more would hide it.
        _, recent = windows(len(steps), 1, self.config.recent_fraction)
        sl = slice(0, 1) if window == "start" else recent
        w = vals[sl]  # (steps in the window, main layers)
        prof = log_profile(w)
        zero = tuple(
            main_pos
            for main_pos, col in enumerate(w.T)
            if np.isfinite(col).any() and np.all(col[np.isfinite(col)] == 0)
        )
        x = np.arange(len(main), dtype=np.float64)  # main_pos of each column of w
        b, _ = theil_sen(x, prof)
        ok = np.isfinite(prof)
        n = int(ok.sum())
        if not math.isfinite(b) or n < min(2, self.config.min_depth_layers):
            return None
        span = float(x[ok].max() - x[ok].min())
        first, last = int(np.flatnonzero(ok)[0]), int(np.flatnonzero(ok)[-1])  # main_pos
        return DepthFit(
            metric=name,
            per_layer=_pow10(-b),
            gain=_pow10(-b * span),
            n=n,
            first=_pow10(float(prof[first])),
            last=_pow10(float(prof[last])),
            steps=(int(steps[sl][0]), int(steps[sl][-1])),
            zero_layers=zero,
        )

    def backward_signal(self) -> Metric:
        """act_grad_norm (dL/dh) when recorded on >= 2 main layers, else grad_rms."""
        _, v = self.metric(ACT_GRAD_NORM)
        if v.size and np.sum(np.isfinite(v[:, self.main]).any(axis=0)) >= 2:
            return ACT_GRAD_NORM
        return GRAD_RMS

    def column_median(self, name: Metric, window: Window = "all") -> np.ndarray:
        """Per-layer median of a metric over a window ("all", "start", "recent"); NaN if absent."""
        steps, vals = self.metric(name)
        if len(steps) == 0:
            return np.full(len(self.names), np.nan)
        order = np.argsort(steps, kind="stable")
        vals = vals[order]
        if window != "all":
            start, recent = windows(
                len(steps), self.config.start_steps, self.config.recent_fraction
            )
            vals = vals[start if window == "start" else recent]
        with np.errstate(invalid="ignore"):
            vals = np.where(np.isfinite(vals), vals, np.nan)
        return np.asarray(nanmedian(vals, axis=0), dtype=np.float64)

    def step_range(self, *names: Metric) -> tuple[int, int] | None:
        """First and last step recorded for these metrics/scalars."""
        all_steps = [self.metric(n)[0] for n in names] + [self.scalar(n)[0] for n in names]
        s = np.concatenate([a for a in all_steps if len(a)] or [np.zeros(0, dtype=np.int64)])
        return (int(s.min()), int(s.max())) if len(s) else None

    # ------------------------------------------------------------------ context
    @cached_property
    def activation(self) -> str | None:
        """The commonest activation after the main layers (None when none was seen)."""
        layers = self.run.layers
        acts = [layers[pos].activation for pos in self.main if layers[pos].activation]
        return Counter(acts).most_common(1)[0][0] if acts else None

    @cached_property
    def high_lr(self) -> bool:
        """The main layers' median update_ratio is above ``config.high_update_ratio``."""
        med = nanmedian(self.column_median(UPDATE_RATIO)[self.main]) if self.main else math.nan
        return bool(math.isfinite(med) and med > self.config.high_update_ratio)

    def context(self, **extra: Any) -> dict[str, Any]:
        """Keyword context for :func:`remedies_for` from what the run tells.

        ``optimizer`` and ``has_residual`` come from the run's config, which the Monitor fills
        at watch time (the optimizer's class name; ``residual`` from the module class names, see
        :mod:`gradguard.model.structure`), for stored and in-memory runs alike.
        """
        kinds = {lay.kind for lay in self.run.layers}
        opt = self.run.config.get("optimizer")
        residual = self.run.config.get("residual")
        framework = self.run.config.get("framework")  # "keras" from gradguard.keras
        ctx: dict[str, Any] = {
            "activation": self.activation,
            "high_lr": self.high_lr,
            "recurrent": bool(kinds & _RECURRENT),
            "has_norm": any("Norm" in k for k in kinds),
            "depth": len(self.main) or None,
            "optimizer": opt if isinstance(opt, str) else None,
            "has_residual": residual is True,
            "framework": framework if isinstance(framework, str) else None,
        }
        ctx.update(extra)
        return ctx

    def remedies(self, kind: str, **extra: Any) -> tuple[Remedy, ...]:
        """The ranked remedies for a finding ``kind`` in this run's context (at most
        ``config.max_remedies``)."""
        return remedies_for(kind, **self.context(**extra))[: self.config.max_remedies]
