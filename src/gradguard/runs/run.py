"""A recorded run read into memory: the layer table, per-layer metrics, scalars, events."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradguard.errors import ConfigError, StoreError
from gradguard.metrics import GRAD_NORM_TOTAL, LAYER_METRICS, LOSS, LR, by_name
from gradguard.record.batch import Event, Layer

__all__ = ["Run", "SKIP_EVENTS"]

# event kinds that mark a skipped optimizer step (the Monitor's scaler= watch, gg.Guard)
SKIP_EVENTS = ("scaler_skip", "guard_skip")


class Run:
    """One recorded run, read into memory.

    Attributes:
        name: the run's name.
        layers: list of :class:`Layer`, in forward order (the column order of every metric).
        events: list of :class:`Event`, in recording order.
        config: the watch configuration and user options recorded with the run.
        environment: versions, device, host.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[Layer],
        metrics: Mapping[str, tuple[np.ndarray, np.ndarray]],
        scalars: Mapping[str, tuple[np.ndarray, np.ndarray]],
        events: Sequence[Event] = (),
        config: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        created: str = "",
        path: Path | None = None,
    ) -> None:
        self.name = name
        self.layers = list(layers)
        self._metrics = dict(metrics)
        self._scalars = dict(scalars)
        self.events = list(events)
        self.config = dict(config or {})
        self.environment = dict(environment or {})
        self.created = created
        self.path = path

    @classmethod
    def from_arrays(
        cls,
        *,
        name: str = "run",
        layers: Sequence[str | Layer],
        metrics: Mapping[str, tuple[Any, Any]] | None = None,
        scalars: Mapping[str, tuple[Any, Any]] | None = None,
        events: Sequence[Event] = (),
        config: Mapping[str, Any] | None = None,
    ) -> Run:
        """Build a run in memory (tests, synthetic statistics, other tools' logs).

        >>> run = Run.from_arrays(layers=["fc1", "fc2"], metrics={"grad_norm": ([0, 1], [[1.0, 2.0], [1.5, 2.5]])})
        >>> run.metric("grad_norm")[1].shape
        (2, 2)
        """
        lays = [
            lay if isinstance(lay, Layer) else Layer(index=i, name=str(lay))
            for i, lay in enumerate(layers)
        ]
        n = len(lays)
        ms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (s, v) in (metrics or {}).items():
            steps = np.asarray(s, dtype=np.int64).reshape(-1)
            vals = np.asarray(v, dtype=np.float64).reshape(len(steps), n)
            ms[k] = (steps, vals)
        ss: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (s, v) in (scalars or {}).items():
            steps = np.asarray(s, dtype=np.int64).reshape(-1)
            ss[k] = (steps, np.asarray(v, dtype=np.float64).reshape(len(steps)))
        return cls(name, lays, ms, ss, events, config)

    def bounded(self, head: int, tail: int) -> Run:
        """This run with each series cut to its first ``head`` and last ``tail`` recorded steps
        (what online diagnosis judges); events are kept.

        >>> Run.from_arrays(layers=["a"], scalars={"loss": (range(10), range(10))}).bounded(2, 3).scalar("loss")[0]
        array([0, 1, 7, 8, 9])
        """

        def cut(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if len(steps) <= head + tail:
                return steps, values
            keep = np.r_[np.arange(head), np.arange(len(steps) - tail, len(steps))]
            return steps[keep], values[keep]

        return Run(
            self.name,
            self.layers,
            {m: cut(*self.metric(m)) for m in self.metric_names},
            {s: cut(*self.scalar(s)) for s in self.scalar_names},
            self.events,
            self.config,
            self.environment,
            path=self.path,
        )

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    @property
    def metric_names(self) -> list[str]:
        return sorted(self._metrics)

    @property
    def scalar_names(self) -> list[str]:
        return sorted(self._scalars)

    @property
    def steps(self) -> np.ndarray:
        """Every step with a per-layer record, sorted."""
        if not self._metrics:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([s for s, _ in self._metrics.values()]))

    @property
    def skipped(self) -> dict[int, str]:
        """Steps whose optimizer call did not update the weights, and why (``scaler_overflow``,
        ``nonfinite_grad``, ...): the ``scaler_skip`` and ``guard_skip`` events."""
        return {
            int(e.step): str(e.data.get("reason", e.kind))
            for e in self.events
            if e.kind in SKIP_EVENTS and e.step is not None
        }

    def has_metric(self, name: str) -> bool:
        return name in self._metrics and len(self._metrics[name][0]) > 0

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], values [S, L])`` of a per-layer metric; NaN where a layer had no value.

        A declared metric that was not recorded gives empty arrays (``[0]``, ``[0, L]``), so rules
        can ask freely; a name that is neither (a typo) is an error naming the recorded ones.
        """
        if name not in self._metrics:
            self._known(name, self._metrics)
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.layers)))
        return self._metrics[name]

    def scalar(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], values [S])`` of a scalar; empty arrays when a declared one (``loss``,
        ``lr``...) was never logged; an unknown name (a typo) is an error naming the logged ones."""
        if name not in self._scalars:
            self._known(name, self._scalars)
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return self._scalars[name]

    @staticmethod
    def _known(name: str, recorded: Mapping[str, object]) -> None:
        if by_name(name) is not None:
            return
        close = difflib.get_close_matches(
            name, [*recorded, *LAYER_METRICS, GRAD_NORM_TOTAL, LR, LOSS], n=1
        )
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"no metric or scalar {name!r} in this run; {hint}it has {sorted(recorded)} "
            "(names: gradguard.metrics, or what you passed to mon.log)"
        )

    def to_pandas(self) -> Any:
        """Long tables: ``(metrics, scalars)`` DataFrames (step, layer, metric, value) and (step, name, value)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise StoreError("Run.to_pandas() needs pandas: pip install 'gradguard[pandas]'") from e
        names = np.array(self.layer_names, dtype=object)
        frames = []
        for m, (steps, vals) in self._metrics.items():
            if len(steps) == 0:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "step": np.repeat(steps, len(names)),
                        "layer": np.tile(names, len(steps)),
                        "metric": m,
                        "value": vals.reshape(-1),
                    }
                )
            )
        metrics = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["step", "layer", "metric", "value"])
        )
        sframes = [
            pd.DataFrame({"step": s, "name": k, "value": v}) for k, (s, v) in self._scalars.items()
        ]
        scalars = (
            pd.concat(sframes, ignore_index=True)
            if sframes
            else pd.DataFrame(columns=["step", "name", "value"])
        )
        return metrics, scalars

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, layers={len(self.layers)}, steps={len(self.steps)}, events={len(self.events)})"
