"""``gg.watch``: the one place that wires every stage of a live run together.

The :class:`Monitor` is the recording stage's :class:`~gradguard.record.monitor.Recorder` plus what
becomes of each flushed :class:`~gradguard.record.batch.Batch`: it goes into the run log (memory and
the SQLite store, ``runs/``), then to the sinks (TensorBoard, trainer loggers, ``sinks/``), then to
online diagnosis (``diagnosis/online.py``), whose findings come back as a batch of events down the
same path.

>>> with gg.watch(model, optimizer, store="runs/exp.db") as mon:   # doctest: +SKIP
...     for x, y in loader:
...         loss = loss_fn(model(x), y)
...         optimizer.zero_grad(); loss.backward(); optimizer.step()
...         mon.log(loss=loss)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import platform
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.finding import Finding
from gradguard.diagnosis.online import OnlineDiagnosis
from gradguard.errors import ConfigError, GradguardError
from gradguard.model.structure import residual_hint
from gradguard.record.batch import Batch, Layer
from gradguard.record.config import WatchConfig
from gradguard.record.monitor import Recorder
from gradguard.record.reduce import Reducer, default_reducer
from gradguard.runs.log import RunLog
from gradguard.runs.run import Run
from gradguard.runs.store import Store
from gradguard.sinks import Sink

__all__ = ["Monitor", "watch"]

_DIAGNOSIS = "diagnosis"


class Monitor(Recorder):
    """Records per-layer gradient, weight, update and activation statistics of a training run,
    keeps them (memory and store), feeds sinks and diagnoses them online.

    Create it with :func:`watch` (same arguments). Use as a context manager or call :meth:`close`.

    Attributes:
        layers: the watched layers (:class:`~gradguard.model.layers.LayerInfo`), registration order.
        step_count: optimizer steps counted so far.
        run_name: the run's name in the store.
        run_log: the run so far (:class:`~gradguard.runs.log.RunLog`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        store: str | os.PathLike[str] | Store | None = None,
        name: str | None = None,
        config: WatchConfig | str | None = None,
        clip: Any = None,
        guard: Any = None,
        on_finding: Callable[[Finding], None] | None = None,
        reducer: Reducer | None = None,
        run_config: Mapping[str, Any] | None = None,
        sinks: Sequence[Sink] | None = None,
        scaler: Any = None,
        **options: Any,
    ) -> None:
        if on_finding is not None and not callable(on_finding):
            raise ConfigError(
                f"on_finding must be a function taking a Finding, got {type(on_finding).__name__}; "
                "e.g. on_finding=print, or leave it out"
            )
        for helper in (clip, guard):  # checked before any hook or file exists
            if helper is not None and not callable(getattr(helper, "attach", None)):
                raise GradguardError(
                    f"{type(helper).__name__} cannot be attached to a Monitor (no attach method); "
                    "pass a gg.clip clipper as clip= and a gg.Guard as guard="
                )
        reducer = reducer or default_reducer()
        # Store: opened first, so that a bad path fails now (before any hook is installed), not at
        # the first flush. Only the writing rank opens it.
        opened = None
        if store is not None and reducer.is_writer:
            opened = store if isinstance(store, Store) else Store(store)
        try:
            super().__init__(
                model,
                optimizer,
                config=config,
                reducer=reducer,
                run_config=run_config,
                scaler=scaler,
                **options,
            )
            dcfg = self.config.diagnosis
            if dcfg is not None and not isinstance(dcfg, DiagnosisConfig):
                raise ConfigError(
                    f"diagnosis must be a DiagnosisConfig or None, got {type(dcfg).__name__}; "
                    "build one with gradguard.diagnosis.DiagnosisConfig(...)"
                )
        except BaseException:
            if hasattr(self, "trace"):
                self.detach()  # hooks off again; nothing was recorded
                self._closed = True
            if opened is not None and opened is not store:
                opened.close()
            raise
        self.diagnosis_config: DiagnosisConfig = dcfg or DiagnosisConfig()
        # The run's config: stored with the run and carried by the in-memory mon.run.
        self.run_config = {"watch": self.config.to_dict(), **self.run_config}
        if optimizer is not None:
            self.run_config["optimizer"] = type(optimizer).__name__
        self.run_config["model"] = type(model).__name__
        if "residual" not in self.run_config:  # the user's run_config={"residual": ...} wins
            # class names: a guess until the first forward's autograd graph decides
            hint = residual_hint(model)
            self.run_config["residual"] = hint is not None
            if hint is not None:
                self.run_config["residual_module"] = hint
        online = self.config.diagnose_online
        self.run_log = RunLog(
            name,
            self.run_config,
            store=opened,
            environment=_environment(self.device),
            keep_head=self.diagnosis_config.start_steps if online else 0,
            keep_tail=self.diagnosis_config.online_window if online else 0,
        )
        self.run_name = self.run_log.name
        self.store_path: Path | None = self.run_log.path
        self.sinks: list[Sink] = list(sinks or [])
        for sink in self.sinks:
            bind = getattr(sink, "bind", None)
            if callable(bind):
                bind(self.layers)
        self.online = (
            OnlineDiagnosis(self.run_log, self._emit, self.diagnosis_config, on_finding)
            if online
            else None
        )
        self.on_finding = on_finding
        for helper in (clip, guard):
            if helper is not None:
                helper.attach(self)
        self.clip = clip
        self.guard = guard
        _LIVE.add(self)

    # ------------------------------------------------------------------ the batch path
    def publish(self, batch: Batch, *, wait: bool) -> None:
        """Run log and store, then sinks, then online diagnosis (whose findings come back here)."""
        self.run_log.append(batch, wait=wait)
        layers = self.recorded_layers()
        self._to_sinks(batch, layers)
        if self.online is not None and not self._closed:
            self._guarded(_DIAGNOSIS, lambda: self.online.write(batch, layers))  # type: ignore[union-attr]

    def _emit(self, batch: Batch) -> None:
        """Finding events from online diagnosis: down the same path, without diagnosing again."""
        self.run_log.append(batch)
        self._to_sinks(batch, self.recorded_layers())

    def _to_sinks(self, batch: Batch, layers: list[Layer]) -> None:
        """Every sink gets the batch (writing rank only); a failing sink is reported once and dropped."""
        if not self.reducer.is_writer:
            return
        for i, sink in enumerate(self.sinks):
            part = f"sink {i} ({type(sink).__name__})"
            if part not in self.failures:
                try:
                    sink.write(batch, layers)
                except Exception as e:
                    self._fail(part, e)

    @property
    def run(self) -> Run:
        """Everything flushed so far, as a :class:`~gradguard.runs.run.Run` (memory and store)."""
        return self.run_log.run(self.recorded_layers())

    def close(self) -> None:
        """Flush, wait for the store, close the sinks and remove every hook. Safe to call twice."""
        if self._closed:
            return
        try:
            super().close()
            for i, sink in enumerate(self.sinks):
                try:
                    sink.close()
                except Exception as e:
                    self._fail(f"sink {i} ({type(sink).__name__}) close", e)
        finally:
            self.run_log.close()
            _LIVE.discard(self)

    def __enter__(self) -> Monitor:
        return self


def _environment(device: torch.device) -> dict[str, Any]:
    from gradguard import __version__

    env: dict[str, Any] = {
        "gradguard": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "pid": os.getpid(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        env["world_size"] = torch.distributed.get_world_size()
        env["rank"] = torch.distributed.get_rank()
    return env


_LIVE: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # hooks removed and buffers flushed at interpreter exit
    for mon in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at exit
            mon.close()


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    store: str | os.PathLike[str] | Store | None = None,
    name: str | None = None,
    config: WatchConfig | str | None = None,
    clip: Any = None,
    guard: Any = None,
    on_finding: Callable[[Finding], None] | None = None,
    sinks: Sequence[Sink] | None = None,
    reducer: Reducer | None = None,
    scaler: Any = None,
    **options: Any,
) -> Monitor:
    """Start watching ``model`` (and count steps of ``optimizer``).

    Args:
        model: the network.
        optimizer: its optimizer; steps are counted by its step hooks. Without one, call
            ``mon.step()`` after each update.
        store: path of the SQLite store file (created if missing); None keeps the run in memory
            (``mon.run``).
        name: the run's name in the store (default ``run-N``).
        config: a :class:`~gradguard.record.config.WatchConfig` or a preset: "light", "default", "full".
        clip: a ``gg.clip`` clipper whose clips are recorded (norm before and after).
        guard: a ``gg.Guard`` whose skipped steps are recorded (``guard_skip`` events).
        scaler: the ``torch.amp.GradScaler`` whose ``scaler.step(optimizer)`` you call: a step it
            skips (inf/NaN gradients) is recorded as skipped (a ``scaler_skip`` event) and keeps
            its step number, so logged values stay with their step. Without it such steps are
            invisible (no optimizer hook fires) and a loss logged for one is averaged into the next.
        on_finding: called with each new online finding of severity >= warning.
        sinks: objects with ``write(batch, layers)`` and ``close()`` fed at each flush (e.g.
            ``gradguard.sinks.tensorboard.TensorBoardSink``); a failing sink is reported once and dropped.
        reducer: how per-layer numbers are combined across processes; default: a
            ``gradguard.record.reduce.DistributedReducer`` when torch.distributed is initialised with
            several ranks, else none (pass ``LocalReducer()`` to keep each rank's own numbers).
        **options: overrides of WatchConfig fields, e.g. ``detail_every=50``, ``flush_every=500``,
            ``budget=0.02`` (keep watching within 2% of the step time: record/budget.py).

    Returns:
        The :class:`Monitor` (also a context manager).

    >>> mon = gg.watch(model, opt, store="runs/exp.db", detail_every=20)   # doctest: +SKIP
    """
    return Monitor(
        model,
        optimizer,
        store=store,
        name=name,
        config=config,
        clip=clip,
        guard=guard,
        on_finding=on_finding,
        sinks=sinks,
        reducer=reducer,
        scaler=scaler,
        **options,
    )
