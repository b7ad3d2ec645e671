"""Sinks: where flushed batches go besides the run log and the store (``gg.watch(..., sinks=[...])``).

A sink is any object with ``write(batch, layers)`` and ``close()`` (the :class:`Sink` protocol); an
optional ``bind(watched)`` is called once with the watched layers
(:class:`~gradguard.model.layers.LayerInfo`: modules and parameters) when watching starts. The
Monitor feeds sinks at each flush, on the writing rank only; a sink that raises is reported once and
dropped. Sinks import their own dependencies when created (tensorboard is optional). Online
diagnosis (``gradguard.diagnosis.online.OnlineDiagnosis``) and the trainer integrations' loggers are
sinks too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gradguard.record.batch import Batch, Layer

if TYPE_CHECKING:  # the lazy attribute below; typing only
    from gradguard.sinks.tensorboard import TensorBoardSink

__all__ = ["Sink", "TensorBoardSink"]


@runtime_checkable
class Sink(Protocol):
    """Receives every flushed batch with the layer table (forward order) it is laid out in."""

    def write(self, batch: Batch, layers: Sequence[Layer]) -> None: ...

    def close(self) -> None: ...


def __getattr__(name: str) -> object:
    if name == "TensorBoardSink":
        from gradguard.sinks.tensorboard import TensorBoardSink

        return TensorBoardSink
    raise AttributeError(f"module 'gradguard.sinks' has no attribute {name!r}")
