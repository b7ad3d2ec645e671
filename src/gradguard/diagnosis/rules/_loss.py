"""The loss as the loss rules judge it: a smoothed level against its start and its own noise.

Every loss rule (divergence, stalled_learning, healthy's summary, the exploding rule's "the loss
starts too large") reads one :class:`LossTrack`, so they cannot disagree about where the loss
started, where it is, or how noisy it is:

- **start**: the lower of the first recorded loss and the median of the first ``start_steps``
  recorded losses. Online diagnosis keeps exactly these points (``Run.bounded``), so the online
  and the final verdict measure from the same start. The first point is kept because a blow-up
  within the first steps must not become the baseline.
- **smooth**: the trailing median of the last ``loss_window`` losses at every point (causal and
  of fixed width: the value at step t uses no later loss, so a flush at step t sees what the
  final diagnosis sees there). A rise counts once it has held ``loss_persist`` points running.
- **noise**: the robust standard deviation of one loss value around its trend (1.4826 x the MAD
  of consecutive differences / sqrt 2, over the points judged; a trend or a few jumps barely move
  it), on the log scale when every loss is positive (mini-batch noise is proportional to the
  level of a loss that falls by orders of magnitude): the yardstick of "clearly". Mini-batch
  noise of any size moves neither verdict.

Two questions are answered at every point, so a rule can name the first step where it held and
whether it still holds at the end:

- **above start**: the smoothed loss is above the start by more than a factor 1 +
  ``end_rise_rel`` and more than ``loss_noise_z`` noise units (the run is worse than at
  initialisation);
- **risen**: the smoothed loss is above its best level so far by more than ``rise_min_fraction``
  of the descent achieved (start - best), more than ``loss_noise_z`` noise units, and (for a
  positive loss) by at least ``rise_ratio`` x the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gradguard.diagnosis._stats import nanmedian
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.view import RunView
from gradguard.metrics import LOSS

__all__ = ["LossTrack", "loss_track", "finite_loss"]


def finite_loss(view: RunView) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, loss)`` of the finite recorded losses, in step order."""
    steps, loss = view.scalar(LOSS)
    ok = np.isfinite(loss)
    return steps[ok], loss[ok]


def _trailing(x: np.ndarray, w: int) -> np.ndarray:
    """Windows of the last ``w`` points ending at every index (the first ones are shorter:
    padded with NaN)."""
    padded = np.concatenate([np.full(w - 1, np.nan), x])
    return np.lib.stride_tricks.sliding_window_view(padded, w)


def _persistent(mask: np.ndarray, k: int) -> np.ndarray:
    """``mask`` where it has held for at least ``k`` consecutive points up to and including each
    point (the first k - 1 points of a run of True are dropped)."""
    if k <= 1 or not mask.any():
        return mask
    run = np.zeros(len(mask), dtype=np.int64)
    count = 0
    for i, m in enumerate(mask):  # runs are rare and short: a plain loop over the set points
        count = count + 1 if m else 0
        run[i] = count
    return run >= k


@dataclass(frozen=True)
class LossTrack:
    """The finite loss points of a run and the levels every loss rule judges."""

    steps: np.ndarray
    loss: np.ndarray
    window: int
    start: float
    start_steps: tuple[int, int]
    config: DiagnosisConfig

    @cached_property
    def smooth(self) -> np.ndarray:
        """Trailing median of the last ``window`` losses at every point."""
        return np.asarray(nanmedian(_trailing(self.loss, self.window), axis=1), dtype=np.float64)

    @cached_property
    def positive(self) -> bool:
        """Every loss is > 0: noise is measured on the log scale (mini-batch noise of a loss
        that falls by orders of magnitude is proportional to its level)."""
        return bool(np.all(self.loss > 0))

    @cached_property
    def noise(self) -> float:
        """Robust standard deviation of one loss value around its trend, over the points judged
        (1.4826 x the MAD of consecutive differences / sqrt 2: a trend or a few jumps barely
        move it); in log units when the loss is positive, else in loss units."""
        x = np.log(self.loss) if self.positive else self.loss
        d = np.diff(x)
        if len(d) < 2:
            return 0.0
        mad = float(np.median(np.abs(d - np.median(d))))
        return 1.4826 * mad / math.sqrt(2.0)

    @cached_property
    def z(self) -> float:
        """Noise units a difference of smoothed levels must exceed: ``loss_noise_z``, or more on
        long runs -- the highest and the lowest of N trailing medians of ``window`` points lie
        about sqrt(2 ln N) x 1.25 / sqrt(window) noise units above and below the level, so a
        20,000-step run of pure noise would otherwise "rise from its best". N counts every loss
        point of the run so far, also those between the head and the tail that online diagnosis
        no longer holds (from the steps and their usual spacing): it has judged those points at
        earlier flushes, each flush one more look at the same noise."""
        n = max(len(self.loss), self.points_so_far, 2)
        extremes = 2.0 * math.sqrt(2.0 * math.log(n)) * 1.2533 / math.sqrt(self.window)
        return max(self.config.loss_noise_z, extremes)

    @property
    def points_so_far(self) -> int:
        """Loss points from the first to the last recorded step, at the tail's usual spacing."""
        tail = np.diff(self.steps[-self.window * 4 :])
        spacing = float(np.median(tail)) if len(tail) else 1.0
        if not spacing > 0:
            return len(self.loss)
        return int((self.steps[-1] - self.steps[0]) / spacing) + 1

    def _clearly_above(self, ref: np.ndarray | float, rel: float) -> np.ndarray:
        """Where the smoothed loss exceeds ``ref`` by more than the factor (or, for a loss
        that can be <= 0, the fraction of |ref|) ``rel`` and by more than :attr:`z` noise."""
        z = self.z * self.noise
        ref = np.asarray(ref, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            if self.positive:
                return self.smooth > ref * np.exp(max(math.log1p(rel), z))  # type: ignore[no-any-return]
            return self.smooth > ref + np.maximum(rel * np.abs(ref), z)  # type: ignore[no-any-return]

    @property
    def end(self) -> float:
        """The smoothed loss at the last recorded point."""
        return float(self.smooth[-1])

    @property
    def end_steps(self) -> tuple[int, int]:
        k = min(self.window, len(self.steps))
        return int(self.steps[-k]), int(self.steps[-1])

    @cached_property
    def best_so_far(self) -> np.ndarray:
        """The best level so far: the lowest level the smoothed loss has *held* for a whole
        window (running minimum of its trailing maximum over ``window`` points), from the first
        full window on. A stretch of easy mini-batches shorter than a window (six in a row took
        a character LSTM's median from 2.2 to 1.18 for four points) is not a level the loss
        reached, so the loss coming back from it is no rise."""
        w = self.window
        s = self.smooth.copy()
        s[: w - 1] = np.nan  # not full windows yet
        windows = _trailing(s, w)
        seen = ~np.isnan(windows).all(axis=1)
        held = np.full(len(s), np.inf)
        held[seen] = np.nanmax(windows[seen], axis=1)  # since the first full window
        return np.minimum.accumulate(held)

    @cached_property
    def above_start(self) -> np.ndarray:
        """Where the smoothed loss is clearly above the start (bool per point)."""
        out = self._clearly_above(self.start, self.config.end_rise_rel)
        out[: self.window - 1] = False
        return _persistent(out, self.config.loss_persist)

    @cached_property
    def risen(self) -> np.ndarray:
        """Where the smoothed loss is clearly above its best level so far (bool per point)."""
        cfg = self.config
        best = self.best_so_far
        with np.errstate(invalid="ignore", over="ignore"):
            descent = np.maximum(self.start - best, 0.0)
            enough = self.smooth - best > cfg.rise_min_fraction * descent
            if self.positive:
                clear = self._clearly_above(best, cfg.rise_ratio - 1.0)
            else:  # a loss that can be <= 0: no ratio, the noise and the descent decide
                clear = self.smooth - best > self.z * self.noise
            out = np.isfinite(best) & enough & clear
        out[: self.window - 1] = False
        return _persistent(out, cfg.loss_persist)

    def first(self, mask: np.ndarray) -> int | None:
        """The index of the first point where ``mask`` holds, None if none."""
        hit = np.flatnonzero(mask)
        return int(hit[0]) if len(hit) else None

    def later_ratio(self) -> float:
        """The start over the median of the second half (> 1: the loss started too large);
        NaN when the loss did not fall (a loss that blew up did not "start" high)."""
        if len(self.loss) < 2 * self.config.start_steps or self.above_start[-1]:
            return math.nan
        later = float(np.median(self.loss[len(self.loss) // 2 :]))
        return self.start / later if later > 0 and self.start > 0 else math.nan


def loss_track(view: RunView) -> LossTrack | None:
    """The run's :class:`LossTrack`, or None with fewer than ``min_loss_points`` finite losses."""
    cfg = view.config
    steps, loss = finite_loss(view)
    if len(loss) < cfg.min_loss_points:
        return None
    k = min(cfg.start_steps, len(loss))
    head = float(np.median(loss[:k]))
    start = min(float(loss[0]), head)
    window = min(cfg.loss_window, len(loss))
    return LossTrack(
        steps=steps,
        loss=loss,
        window=window,
        start=start,
        start_steps=(int(steps[0]), int(steps[k - 1])),
        config=cfg,
    )
