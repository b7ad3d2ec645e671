"""Thresholds of the diagnosis rules: one frozen dataclass with documented, calibrated defaults.

How the defaults were chosen (short real runs recorded with ``gg.watch``, see docs/diagnosis.md):
a ReLU + He MLP (10 layers) shows a depth gain of ~3x, ReLU + He + BatchNorm ~5x (the mild
gradient growth of Yang et al. 2019), tanh at sigma_w^2 = 1 ~3x; the textbook failures are far
beyond: a 20-layer sigmoid MLP with N(0, 0.01^2) weights loses 1e-35 over depth, a 10-layer tanh
MLP at sigma_w^2 = 25 gains ~60x, a 20-layer ReLU MLP at sigma_w^2 = 4 ~1000x in dL/dh.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from gradguard.errors import ConfigError

__all__ = ["DiagnosisConfig"]


def _whole(value: object, least: int) -> bool:
    """A whole number (int, numpy integer; not bool) >= ``least``."""
    if isinstance(value, bool):
        return False
    try:
        return operator.index(value) >= least  # type: ignore[arg-type]
    except TypeError:
        return False


@dataclass(frozen=True)
class DiagnosisConfig:
    """Thresholds of every rule. Ratios are plain factors (100 = two orders of magnitude).

    >>> cfg = DiagnosisConfig(depth_warning=30.0)
    """

    # --- depth profile (vanishing / exploding over layers) ---
    # Gradient ratio between the first and the last layer (fitted over depth) that is reported
    # as info / warning / critical. Healthy nets measured 3-5x; textbook failures 60x to 1e35.
    depth_info: float = 10.0
    depth_warning: float = 100.0
    depth_critical: float = 1e4
    # Main layers needed on the depth axis before a depth profile is fitted (two layers of
    # different kinds -- an RNN and its output head -- are not a profile).
    min_depth_layers: int = 3
    # Depth profiles are judged at the first recorded step (initialisation) and over the recent
    # window. Loss points at the start of the run compared with its later level.
    start_steps: int = 5
    # Fraction of the run summarised as "recently" (median per layer).
    recent_fraction: float = 0.25
    # Early layers whose update_ratio is at least this fraction of the last layers' still learn
    # (an adaptive optimizer compensates): a vanishing finding drops one severity level.
    update_ratio_compensated: float = 0.1
    # Layers with exactly zero gradient (underflow) within this leading fraction of the depth
    # axis make a vanishing finding critical (0.5: the early half of the stack).
    underflow_early_fraction: float = 0.5
    # The loss over the first start_steps vs its median over the second half of the run: from
    # loss_start_note it is quoted as evidence of an exploding signal; from loss_start_warning it
    # makes a mild (info) depth explosion a warning (the loss starts an order of magnitude high).
    loss_start_note: float = 3.0
    loss_start_warning: float = 10.0

    # --- over time (exploding) ---
    # A step's total gradient norm is a spike if it is >= spike_ratio x the median of the
    # spike_window steps before it AND its robust z-score (log scale, MAD) is >= spike_z.
    spike_ratio: float = 10.0
    # A gradient-norm spike is a warning from spike_warning x its running median on (below: an
    # info note; healthy LSTM language models measured single 10-15x jumps).
    spike_warning: float = 100.0
    # A jump of >= spike_extreme x the median of the points before it is a spike from the third
    # recorded point on (no noise estimate needed; the start of a run is where blow-ups hide).
    spike_extreme: float = 1000.0
    spike_z: float = 8.0
    spike_window: int = 20
    # Finite positive points needed in the trailing window before a spike can be called (the
    # median and MAD of fewer points are too noisy).
    spike_min_points: int = 5
    # Recorded steps of grad_norm_total (and of weight_norm) needed before the over-time checks
    # (growth, weight growth) speak: each compares a first and a last fifth/tenth of the run.
    min_time_points: int = 10
    # Growth of grad_norm_total: the peak of its trailing median (the loss window) over the
    # median of the first start_steps steps.
    time_growth_warning: float = 100.0
    time_growth_critical: float = 1e4
    # Growth of a layer's weight norm over the run that counts as geometric weight growth.
    weight_growth: float = 10.0

    # --- non-finite values ---
    # "The gradient spiked right before the first NaN/Inf" (which ranks clipping higher): the
    # last finite grad_norm_total before it is >= nonfinite_spike_ratio x the median of the
    # finite ones before that, with at least nonfinite_spike_points finite points in all.
    nonfinite_spike_points: int = 6
    nonfinite_spike_ratio: float = 10.0

    # --- activations ---
    # Mean fraction of tanh/sigmoid outputs within 1% of their bounds.
    saturation_warning: float = 0.4
    saturation_critical: float = 0.8
    # Mean fraction of exact zeros after a ReLU/ReLU6 (a healthy ReLU layer shows ~0.5).
    dead_warning: float = 0.9
    dead_critical: float = 0.99
    # Median update_ratio above which the learning rate counts as high (rule of thumb: ~1e-3).
    high_update_ratio: float = 1e-2

    # --- loss (see rules/_loss.py: every loss rule reads one LossTrack) ---
    # Finite loss points needed before the loss rules speak.
    min_loss_points: int = 20
    # Relative decrease of the loss (start -> smoothed end) below which learning counts as
    # stalled, judged from stall_min_points loss points on (a plateau of ~100 steps at chance
    # level before the loss starts to fall is normal under SGD -- measured on a digits CNN -- and
    # online diagnosis must not call it a stall).
    stall_rel: float = 0.02
    stall_min_points: int = 200
    # A loss that starts below this (in absolute value) is at zero already: converged, not stalled.
    converged_loss: float = 1e-8
    # "Clearly" means: by more than loss_noise_z robust standard deviations of one loss value
    # (trend-free mini-batch noise; on long runs more: the extremes of N noisy medians spread
    # by about 2 sqrt(2 ln N) x 1.25 / sqrt(loss_window) of it) -- and by the margins below.
    loss_noise_z: float = 3.0
    # The smoothed loss above the start by more than this fraction of |start| (and the noise):
    # worse than at initialisation (divergence; critical when it ends there).
    end_rise_rel: float = 0.1
    # The smoothed loss above its best level so far by >= rise_ratio x the best (positive
    # losses)...
    rise_ratio: float = 1.5
    # ...and by at least this fraction of the descent achieved (start - best), so a loss that
    # fell 1000x and crept back 2x from a tiny best is not divergence. The healthy-run corpus
    # (benchmarks/real_workloads.py: batch 4-8 mini-batches near zero loss) gives back up to 23%
    # of its descent in transient bumps; 40% leaves a margin above that.
    rise_min_fraction: float = 0.4
    # A rise to >= divergence_critical x the best level (or the start) is critical.
    divergence_critical: float = 10.0
    # The smoothed loss is the trailing median of loss_window points: a fixed window, so a flush
    # at step t and the final diagnosis smooth step t alike (online and final agree). A rise
    # counts once it has held for loss_persist consecutive points (a few noisy mini-batches
    # cannot make one).
    loss_window: int = 9
    loss_persist: int = 3
    # A loss point is a spike if >= loss_spike_ratio x its trailing median (and robust z >=
    # spike_z, over spike_window points). Healthy runs measured up to 11.5x but z <= 3.1.
    loss_spike_ratio: float = 3.0
    # Fraction of consecutive loss differences that alternate in sign (iid noise: ~2/3) and
    # minimum relative amplitude for an oscillation.
    oscillation_alternation: float = 0.85
    oscillation_amplitude: float = 0.5
    # ... and the turning points must exceed independent noise's by this many standard deviations
    # (turning-point test). Alternation alone fired on a healthy deep MLP's batch losses near
    # zero (86% over 24 points: z 2.2, chance at one of 30 flushes); the corpus's healthy runs
    # reached z 3.0 (seeds 0-1) and 3.2 (seeds 2-4), its induced failures 3.5 at most.
    oscillation_z: float = 3.5

    # --- online ---
    # At each flush the rules see the first start_steps and the last online_window recorded
    # steps of every series, so the cost per flush stays bounded on long runs.
    online_window: int = 1000

    # --- presentation ---
    max_remedies: int = 5  # remedies shown per finding

    def __post_init__(self) -> None:
        if not (1.0 < self.depth_info <= self.depth_warning <= self.depth_critical):
            raise ConfigError(
                "DiagnosisConfig needs 1 < depth_info <= depth_warning <= depth_critical, got "
                f"{self.depth_info}, {self.depth_warning}, {self.depth_critical}; "
                "raise the larger ones or lower the smaller ones"
            )
        for name in (
            "min_depth_layers",
            "start_steps",
            "spike_window",
            "spike_min_points",
            "min_time_points",
            "min_loss_points",
            "stall_min_points",
            "max_remedies",
            "online_window",
            "loss_window",
            "loss_persist",
        ):
            value = getattr(self, name)
            if not _whole(value, 1):
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be a whole number >= 1, got {value!r}; "
                    f"pass e.g. {name}={getattr(DiagnosisConfig, name)!r} (the default)"
                )
        if not _whole(self.nonfinite_spike_points, 2):
            raise ConfigError(
                "DiagnosisConfig.nonfinite_spike_points must be a whole number >= 2 (the point "
                f"before the NaN and at least one to compare it with), got "
                f"{self.nonfinite_spike_points!r}; pass e.g. nonfinite_spike_points=6"
            )
        # warning <= critical pairs (NaN fails every comparison, so it is refused too)
        for lo, hi in (
            ("time_growth_warning", "time_growth_critical"),
            ("saturation_warning", "saturation_critical"),
            ("dead_warning", "dead_critical"),
            ("loss_start_note", "loss_start_warning"),
            ("rise_ratio", "divergence_critical"),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if not a <= b:
                raise ConfigError(
                    f"DiagnosisConfig.{lo} must be <= {hi}, got {lo}={a!r} > {hi}={b!r}; "
                    f"lower {lo} or raise {hi}"
                )
        # ratios that must exceed 1 (a "spike" or "growth" of <= 1x is no change at all)
        for name in (
            "spike_ratio",
            "spike_warning",
            "spike_extreme",
            "loss_spike_ratio",
            "time_growth_warning",
            "weight_growth",
            "rise_ratio",
            "loss_start_note",
            "nonfinite_spike_ratio",
        ):
            value = getattr(self, name)
            if not value > 1.0:
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be > 1 (a factor), got {value!r}; "
                    f"pass e.g. {name}={getattr(DiagnosisConfig, name)!r} (the default)"
                )
        # fractions in (0, 1]
        for name in (
            "recent_fraction",
            "underflow_early_fraction",
            "saturation_warning",
            "saturation_critical",
            "dead_warning",
            "dead_critical",
            "oscillation_alternation",
        ):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be in (0, 1], got {value!r}; "
                    f"pass e.g. {name}={getattr(DiagnosisConfig, name)!r} (the default)"
                )
        # positive numbers
        for name in ("spike_z", "update_ratio_compensated", "high_update_ratio"):
            value = getattr(self, name)
            if not (value > 0.0 and math.isfinite(value)):
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be a finite number > 0, got {value!r}; "
                    f"pass e.g. {name}={getattr(DiagnosisConfig, name)!r} (the default)"
                )
        # non-negative numbers
        for name in (
            "stall_rel",
            "converged_loss",
            "rise_min_fraction",
            "oscillation_amplitude",
            "oscillation_z",
            "end_rise_rel",
            "loss_noise_z",
        ):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be a finite number >= 0, got {value!r}; "
                    f"pass e.g. {name}={getattr(DiagnosisConfig, name)!r} (the default)"
                )
