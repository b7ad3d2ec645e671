"""PyTorch Lightning: a callback that watches a LightningModule during ``trainer.fit``.

>>> trainer = L.Trainer(callbacks=[GradguardCallback(store="runs/exp.db")])   # doctest: +SKIP
>>> trainer.fit(model, loader)                                              # doctest: +SKIP

How it fits Lightning (2.x):

- ``on_fit_start`` (after the strategy has moved the model and built the optimizers): a Monitor on the
  LightningModule and the torch optimizer inside ``trainer.optimizers`` (not the LightningOptimizer
  wrapper). Steps are counted by that optimizer's hooks, so ``accumulate_grad_batches`` gives one
  record per optimizer step, and manual optimization (``self.optimizers().step()``) works the same.
- Automatic optimization runs forward and backward inside ``optimizer.step(closure)``, after the step
  pre-hooks; the callback registers a pre-hook before the Monitor's that runs the closure first, so
  gradients are final when they are read (after DDP's all-reduce and AMP's unscale).
- ``on_train_batch_end``: the loss of each optimizer step (the sum of the normalised micro-batch losses
  under accumulation) goes to ``mon.log`` as a tensor, no host sync.
- At each flush: key scalars (grad_norm_total, min/max layer grad_norm, nonfinite count, largest
  update_ratio) go to every trainer logger with ``log_metrics`` -- host numbers already read by the
  flush, no extra sync.
- ``on_fit_end``: findings of ``gradguard.diagnosis.diagnose`` are printed and stored as events;
  ``on_exception`` / ``teardown``: the Monitor is closed (hooks removed, what was recorded flushed).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from gradguard.errors import GradguardError
from gradguard.integrations._common import final_findings, run_closure_first, unwrap_optimizer
from gradguard.monitor import Monitor
from gradguard.store import Batch, Layer

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef,assignment]
    except ImportError as e:
        raise ImportError(
            "gradguard.integrations.lightning needs Lightning; install it with "
            "`pip install gradguard[lightning]` (or `pip install lightning`)"
        ) from e

__all__ = ["GradguardCallback", "key_scalars"]


def key_scalars(batch: Batch, prefix: str = "gradguard/") -> dict[int, dict[str, float]]:
    """A few numbers per recorded step of a flushed batch, for a trainer's logger.

    Args:
        batch: what the Monitor flushed.
        prefix: put before each name.

    Returns:
        ``{step: {name: value}}`` with grad_norm_total, grad_norm_min, grad_norm_max (over layers),
        nonfinite (count over layers) and update_ratio_max where recorded; non-finite values left out.
    """
    out: dict[int, dict[str, float]] = {}

    def put(steps: np.ndarray, values: np.ndarray, name: str) -> None:
        for s, v in zip(steps.tolist(), values.tolist()):
            if math.isfinite(v):
                out.setdefault(int(s), {})[prefix + name] = float(v)

    def over_layers(metric: str, fn: Any, name: str) -> None:
        if metric in batch.metrics:
            steps, values = batch.metrics[metric]  # (S,), (S, L)
            has = ~np.isnan(values).all(axis=1)
            rows = np.full(len(steps), math.nan)
            if has.any():
                rows[has] = fn(values[has], axis=1)
            put(steps, rows, name)

    if "grad_norm_total" in batch.scalars:
        put(*batch.scalars["grad_norm_total"], "grad_norm_total")
    over_layers("grad_norm", np.nanmin, "grad_norm_min")
    over_layers("grad_norm", np.nanmax, "grad_norm_max")
    over_layers("nonfinite", np.nansum, "nonfinite")
    over_layers("update_ratio", np.nanmax, "update_ratio_max")
    return out


class _LoggerSink:
    """Feeds key scalars of each flush to the trainer's loggers."""

    def __init__(self, trainer: Any, prefix: str) -> None:
        self.trainer = trainer
        self.prefix = prefix

    def write(self, batch: Batch, layers: list[Layer]) -> None:
        loggers = list(getattr(self.trainer, "loggers", []) or [])
        if not loggers:
            return
        for step, metrics in sorted(key_scalars(batch, self.prefix).items()):
            for lg in loggers:
                lg.log_metrics(metrics, step=step)

    def close(self) -> None:
        pass


class GradguardCallback(Callback):
    """Watch a LightningModule's gradients during ``trainer.fit``.

    Args:
        store: SQLite store path for the run (None: in memory only, see ``callback.monitor.run``).
        name: the run's name in the store.
        optimizer_index: which of ``trainer.optimizers`` counts the steps (one Monitor per fit).
        log_to_logger: send key scalars to the trainer's loggers at each flush.
        logger_prefix: prefix of those scalars' names.
        show_findings: print the findings of the run at the end of fit (rank 0).
        sinks: extra sinks (e.g. ``TensorBoardSink``).
        **watch_options: anything ``gg.watch`` takes (``config="light"``, ``detail_every=50``, ...).

    Attributes:
        monitor: the Monitor of the current (or last) fit.
        findings: the findings printed at the end of the last fit.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        optimizer_index: int = 0,
        log_to_logger: bool = True,
        logger_prefix: str = "gradguard/",
        show_findings: bool = True,
        sinks: list[Any] | None = None,
        **watch_options: Any,
    ) -> None:
        super().__init__()
        self.store = store
        self.name = name
        self.optimizer_index = optimizer_index
        self.log_to_logger = log_to_logger
        self.logger_prefix = logger_prefix
        self.show_findings = show_findings
        self.sinks = list(sinks or [])
        self.watch_options = watch_options
        self.monitor: Monitor | None = None
        self.findings: list[Any] = []
        self._closure_handle: Any = None
        self._loss: torch.Tensor | None = None
        self._seen_steps = 0

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._close()
        optimizers = list(trainer.optimizers)
        if not optimizers:
            raise GradguardError(
                "GradguardCallback found no optimizer on the trainer; return one from "
                "configure_optimizers()"
            )
        if not 0 <= self.optimizer_index < len(optimizers):
            raise GradguardError(
                f"optimizer_index={self.optimizer_index} but the trainer has {len(optimizers)} "
                f"optimizer(s); pass optimizer_index between 0 and {len(optimizers) - 1}"
            )
        opt = unwrap_optimizer(optimizers[self.optimizer_index])
        # Registered before the Monitor's hooks: the closure runs before gradients are read.
        self._closure_handle = opt.register_step_pre_hook(run_closure_first)
        sinks = list(self.sinks)
        if self.log_to_logger:
            sinks.append(_LoggerSink(trainer, self.logger_prefix))
        self.monitor = Monitor(
            pl_module,
            opt,
            store=self.store,
            name=self.name,
            sinks=sinks,
            run_config={
                "trainer": "lightning",
                "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
                "automatic_optimization": bool(pl_module.automatic_optimization),
            },
            **self.watch_options,
        )
        self._loss, self._seen_steps = None, 0
        self.findings = []

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        mon = self.monitor
        if mon is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().reshape(())
            if pl_module.automatic_optimization:  # micro-batch losses come divided by the count
                self._loss = loss if self._loss is None else self._loss + loss
            else:
                self._loss = loss
        if mon.step_count != self._seen_steps:  # the optimizer stepped during this batch
            self._seen_steps = mon.step_count
            if self._loss is not None:
                mon.log(loss=self._loss)
            self._loss = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.findings = final_findings(self.monitor, show=self.show_findings)
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.event("exception", f"{type(exception).__name__}: {exception}")
        self._close()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._close()

    def _close(self) -> None:
        if self._closure_handle is not None:
            self._closure_handle.remove()
            self._closure_handle = None
        if self.monitor is not None:
            self.monitor.close()
