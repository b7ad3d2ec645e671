"""What one flush of the Monitor hands on: per-layer metrics, scalars, events, the layer table.

A :class:`Batch` is the hand-off from the recording stage to the run log, the store and the sinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Layer", "Event", "Batch"]


@dataclass(frozen=True)
class Layer:
    """A layer as recorded: position in forward order, qualified name, class, size."""

    index: int
    name: str
    kind: str = ""
    numel: int = 0
    trainable: bool = True
    activation: str | None = None  # class name of the activation module that follows it, if seen


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: a finding, a skipped step, a clip, a store problem..."""

    step: int | None
    kind: str
    layer: str | None = None
    value: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class Batch:
    """What one flush hands to the store: per-layer metrics, scalars, events, maybe the layer table."""

    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # name -> ([S], [S, L])
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # name -> ([S], [S])
    events: list[Event] = field(default_factory=list)
    layers: list[Layer] | None = None
    config: dict[str, Any] | None = None  # the run's config, replaced (learned after watch())

    @property
    def empty(self) -> bool:
        """Nothing in it: no metric, scalar, event, layer table or config."""
        return not (self.metrics or self.scalars or self.events or self.layers or self.config)
