"""Thresholds of the diagnosis rules: one frozen dataclass with documented, calibrated defaults.

How the defaults were chosen (short real runs recorded with ``gg.watch``, see docs/diagnosis.md):
a ReLU + He MLP (10 layers) shows a depth gain of ~3x, ReLU + He + BatchNorm ~5x (the mild
gradient growth of Yang et al. 2019), tanh at sigma_w^2 = 1 ~3x; the textbook failures are far
beyond: a 20-layer sigmoid MLP with N(0, 0.01^2) weights loses 1e-35 over depth, a 10-layer tanh
MLP at sigma_w^2 = 25 gains ~60x, a 20-layer ReLU MLP at sigma_w^2 = 4 ~1000x in dL/dh.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradguard.errors import ConfigError

__all__ = ["DiagnosisConfig"]


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
    # Depth profiles are judged at the first recorded step (initialisation) and over the recent
    # window. Loss points at the start of the run compared with its later level.
    start_steps: int = 5
    # Fraction of the run summarised as "recently" (median per layer).
    recent_fraction: float = 0.25
    # Early layers whose update_ratio is at least this fraction of the last layers' still learn
    # (an adaptive optimizer compensates): a vanishing finding drops one severity level.
    update_ratio_compensated: float = 0.1

    # --- over time (exploding) ---
    # A step's total gradient norm is a spike if it is >= spike_ratio x the median of the
    # spike_window steps before it AND its robust z-score (log scale, MAD) is >= spike_z.
    spike_ratio: float = 10.0
    spike_z: float = 8.0
    spike_window: int = 20
    # Growth of grad_norm_total (median of the last fifth / median of the first fifth).
    time_growth_warning: float = 100.0
    time_growth_critical: float = 1e4
    # Growth of a layer's weight norm over the run that counts as geometric weight growth.
    weight_growth: float = 10.0

    # --- activations ---
    # Mean fraction of tanh/sigmoid outputs within 1% of their bounds.
    saturation_warning: float = 0.4
    saturation_critical: float = 0.8
    # Mean fraction of exact zeros after a ReLU/ReLU6 (a healthy ReLU layer shows ~0.5).
    dead_warning: float = 0.9
    dead_critical: float = 0.99
    # Median update_ratio above which the learning rate counts as high (rule of thumb: ~1e-3).
    high_update_ratio: float = 1e-2

    # --- loss ---
    # Loss points needed before stalled / divergence rules speak.
    min_loss_points: int = 20
    # Relative decrease of the loss (median of first fifth -> median of last fifth) below which
    # learning counts as stalled.
    stall_rel: float = 0.02
    # Loss (median of last fifth) above this multiple of its best rolling median: diverging.
    rise_ratio: float = 1.5
    # Fraction of consecutive loss differences that alternate in sign (iid noise: ~2/3) and
    # minimum relative amplitude for an oscillation.
    oscillation_alternation: float = 0.85
    oscillation_amplitude: float = 0.5

    # --- online ---
    # At each flush the rules see the first start_steps and the last online_window recorded
    # steps of every series, so the cost per flush stays bounded on long runs (~50 ms at 60 layers).
    online_window: int = 1000

    # --- presentation ---
    max_remedies: int = 5  # remedies shown per finding

    def __post_init__(self) -> None:
        if not (1.0 < self.depth_info <= self.depth_warning <= self.depth_critical):
            raise ConfigError(
                "DiagnosisConfig needs 1 < depth_info <= depth_warning <= depth_critical, got "
                f"{self.depth_info}, {self.depth_warning}, {self.depth_critical}"
            )
        for name in (
            "start_steps",
            "spike_window",
            "min_loss_points",
            "max_remedies",
            "online_window",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(
                    f"DiagnosisConfig.{name} must be >= 1, got {getattr(self, name)!r}"
                )
        if not 0.0 < self.recent_fraction <= 1.0:
            raise ConfigError(
                f"DiagnosisConfig.recent_fraction must be in (0, 1], got {self.recent_fraction!r}"
            )
