"""``gradguard.keras.Watch``: the ``model.fit`` callback.

>>> model.fit(x, y, callbacks=[gradguard.keras.Watch(store="runs/exp.db")])   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import keras

from gradguard.errors import ConfigError
from gradguard.keras._recorder import KerasMonitor
from gradguard.runs.run import Run
from gradguard.runs.store import Store

__all__ = ["Watch"]


class Watch(keras.callbacks.Callback):
    """Records per-layer gradient statistics of ``model.fit`` into a gradguard run.

    The optimizer's apply step and the model's train step are wrapped from ``set_model`` (before
    ``fit`` compiles its step) until ``on_train_end``. The host reads the statistics at each
    flush (every ``flush_every`` steps and at each epoch's end), never per step.

    Args:
        store: path of the SQLite store file (the schema of ``gg.watch``), or None (memory only:
            ``callback.run``).
        name: the run's name in the store (default ``run-N``); a second ``fit`` with the same
            callback makes a new run.
        flush_every: steps between reads of the device ring.
        detail_every: steps between measurements of the weights (norm, update ratio) and the
            activations.
        diagnose_online: run gg.watch's online diagnosis rules at each flush: a warning per new
            finding (``gradguard: critical vanishing_gradients: ...``), kept in the run as an
            event.

    Attributes:
        monitor: the :class:`~gradguard.keras.KerasMonitor` of the current or last ``fit``.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        name: str | None = None,
        flush_every: int = 100,
        detail_every: int = 10,
        diagnose_online: bool = True,
    ) -> None:
        super().__init__()
        for label, value in (("flush_every", flush_every), ("detail_every", detail_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{label} must be an int >= 1, got {value!r}")
        self.store, self.name = store, name
        self.flush_every, self.detail_every = flush_every, detail_every
        self.diagnose_online = diagnose_online
        self.monitor: KerasMonitor | None = None
        self._since_flush = 0

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self.monitor is not None and not self.monitor._closed:
            return
        self.monitor = KerasMonitor(
            model,
            store=self.store,
            name=self.name,
            flush_every=self.flush_every,
            detail_every=self.detail_every,
            diagnose_online=self.diagnose_online,
        )
        self._since_flush = 0

    # counting and flushing happen at batch *begin*: a callback with its own on_train_batch_end
    # makes Keras dispatch every callback synchronously; this one leaves that async
    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if self.monitor is None:
            return
        if self._since_flush >= self.flush_every:
            self.monitor.flush()
            self._since_flush = 0
        self._since_flush += self._steps_per_batch()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.monitor is not None:
            self.monitor.flush()
            self._since_flush = 0

    def on_train_end(self, logs: Any = None) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def _steps_per_batch(self) -> int:
        spe = getattr(self.model, "steps_per_execution", 1)
        return int(spe) if isinstance(spe, int) and spe > 0 else 1

    @property
    def run(self) -> Run | None:
        """The recorded run of the current or last ``fit`` (None before the first)."""
        return None if self.monitor is None else self.monitor.run
