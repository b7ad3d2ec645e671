"""Configuration of the Monitor: one frozen dataclass with working defaults, and named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gradguard.errors import ConfigError
from gradguard.record.budget import check_budget
from gradguard.record.fused import KERNELS
from gradguard.record.schedules import Schedule, as_schedule, every, never

__all__ = ["WatchConfig", "PRESETS", "resolve_config"]


@dataclass(frozen=True)
class WatchConfig:
    """What the Monitor records, and when.

    Attributes:
        record_every: steps at which per-layer gradient statistics (grad_norm, grad_rms, grad_max,
            weight_norm, nonfinite) are taken. Cheap: a few batched kernels over all gradients.
        detail_every: steps at which the expensive probes run: update_ratio (a copy of the weights
            before the optimizer step) and activation statistics (forward + tensor hooks).
        activations: record activation statistics and the backpropagated signal (act_grad_norm).
        update_ratio: record ||w_after - w_before|| / ||w_before|| around the optimizer step.
        activation_sample: on CPU, activation statistics of an output with at least 4x this many
            elements come from a fixed random subset of its rows holding about this many
            elements (docs/monitor.md states the error it adds); None: every element.
        stats_kernel: how sum of squares and max |g| are computed: "eager", "compiled"
            (``torch.compile``), or "auto" (eager on CPU; on an accelerator the faster of the two,
            timed once at the first flush: ``record/fused.py``).
        flush_every: host reads of the device buffer happen every this many recorded steps.
        diagnose_online: evaluate the cheap diagnosis rules at each flush and warn once per finding.
        diagnosis: thresholds of the online diagnosis (a
            :class:`~gradguard.diagnosis.DiagnosisConfig`); None: its defaults.
        strict: raise errors of the monitor itself instead of reporting and disabling the part.
        budget: the overhead allowed, as a fraction of the step time (e.g. 0.02): the Monitor
            times its own work and spaces the detail steps (and if needed the recorded steps) to
            stay within it (``record/budget.py``); ``record_every``/``detail_every`` then only
            give the starting schedule. None: the schedules as given.
    """

    record_every: Schedule = field(default_factory=lambda: every(1))
    detail_every: Schedule = field(default_factory=lambda: every(10))
    activations: bool = True
    update_ratio: bool = True
    activation_sample: int | None = 32768
    stats_kernel: str = "auto"
    flush_every: int = 100
    diagnose_online: bool = True
    # a gradguard.diagnosis.DiagnosisConfig; the recording stage does not import the diagnosis
    # stage, so gg.watch checks its type
    diagnosis: object | None = None
    strict: bool = False
    budget: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        object.__setattr__(self, "record_every", as_schedule(self.record_every))
        object.__setattr__(self, "detail_every", as_schedule(self.detail_every))
        sample = self.activation_sample
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise ConfigError(
                f"activation_sample must be a whole number >= 1 (elements) or None (all), got {sample!r}"
            )
        if self.stats_kernel not in KERNELS:
            raise ConfigError(f"stats_kernel must be one of {KERNELS}, got {self.stats_kernel!r}")
        if not isinstance(self.flush_every, int) or self.flush_every < 1:
            raise ConfigError(f"flush_every must be a whole number >= 1, got {self.flush_every!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_every": repr(self.record_every),
            "detail_every": repr(self.detail_every),
            "activations": self.activations,
            "update_ratio": self.update_ratio,
            "activation_sample": self.activation_sample,
            "stats_kernel": self.stats_kernel,
            "flush_every": self.flush_every,
            "diagnose_online": self.diagnose_online,
            "diagnosis": None if self.diagnosis is None else asdict(self.diagnosis),  # type: ignore[call-overload]
            "strict": self.strict,
            "budget": self.budget,
        }


PRESETS: dict[str, WatchConfig] = {
    # gradient statistics only: the cheapest useful setting
    "light": WatchConfig(detail_every=never(), activations=False, update_ratio=False),
    "default": WatchConfig(),
    # everything at every step: for short runs, the lab and debugging
    "full": WatchConfig(detail_every=every(1)),
}


def resolve_config(config: WatchConfig | str | None, **overrides: Any) -> WatchConfig:
    """Turn a preset name or config plus keyword overrides into a WatchConfig."""
    if config is None:
        base = PRESETS["default"]
    elif isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown preset {config!r}; use one of {sorted(PRESETS)}")
        base = PRESETS[config]
    elif isinstance(config, WatchConfig):
        base = config
    else:
        raise ConfigError(
            f"config must be a WatchConfig or a preset name, got {type(config).__name__}"
        )
    unknown = set(overrides) - set(WatchConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"unknown watch option(s) {sorted(unknown)}; valid: {sorted(WatchConfig.__dataclass_fields__)}"
        )
    return replace(base, **overrides) if overrides else base
