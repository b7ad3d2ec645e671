"""Sinks: where flushed batches go besides the store (``gg.watch(..., sinks=[...])``).

A sink is any object with ``write(batch: gradguard.runs.store.Batch, layers: list[Layer])`` and
``close()``; an optional ``attach(monitor)`` is called once when the Monitor starts. The Monitor
feeds sinks at each flush, on the writing rank only; a sink that raises is reported once and dropped.
Sinks import their own dependencies when created (tensorboard is optional).
"""

from __future__ import annotations

__all__ = ["TensorBoardSink"]


def __getattr__(name: str) -> object:
    if name == "TensorBoardSink":
        from gradguard.sinks.tensorboard import TensorBoardSink

        return TensorBoardSink
    raise AttributeError(f"module 'gradguard.sinks' has no attribute {name!r}")
