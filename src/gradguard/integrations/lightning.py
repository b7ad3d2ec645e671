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
- Gradient statistics are taken in ``on_before_optimizer_step``, which Lightning calls after the
  closure's backward (and AMP's unscale) and *before* ``configure_gradient_clipping``: with
  ``gradient_clip_val`` the recorded norms are the pre-clip ones (the Monitor's own pre-hook, after the
  clip, skips the step). Manual optimization cannot clip through the trainer; a
  ``self.clip_gradients(...)`` in ``training_step`` runs before ``opt.step()`` and its hook, so there
  the Monitor reads clipped gradients.
- Several optimizers (manual optimization, e.g. a GAN): one Monitor per optimizer, each on the
  submodule whose parameters are exactly that optimizer's (``self.generator``), counting that
  optimizer's steps, each its own run ``<name>.<submodule>`` (extra ``sinks`` are fed by the first);
  or ``optimizer_index=k`` to watch the whole module with optimizer ``k`` alone.
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
from gradguard.metrics import GRAD_NORM, GRAD_NORM_TOTAL, NONFINITE, UPDATE_RATIO
from gradguard.record.batch import Batch, Layer
from gradguard.watching import Monitor

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

    if GRAD_NORM_TOTAL in batch.scalars:
        put(*batch.scalars[GRAD_NORM_TOTAL], GRAD_NORM_TOTAL)
    over_layers(GRAD_NORM, np.nanmin, f"{GRAD_NORM}_min")
    over_layers(GRAD_NORM, np.nanmax, f"{GRAD_NORM}_max")
    over_layers(NONFINITE, np.nansum, NONFINITE)
    over_layers(UPDATE_RATIO, np.nanmax, f"{UPDATE_RATIO}_max")
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
        optimizer_index: which of ``trainer.optimizers`` counts the steps; the Monitor then watches
            the whole LightningModule. None (default): the only optimizer, or with several, one
            Monitor per optimizer on the submodule whose parameters are exactly that optimizer's.
        log_to_logger: send key scalars to the trainer's loggers at each flush.
        logger_prefix: prefix of those scalars' names.
        show_findings: print the findings of the run at the end of fit (rank 0).
        sinks: extra sinks (e.g. ``TensorBoardSink``).
        **watch_options: anything ``gg.watch`` takes (``config="light"``, ``detail_every=50``, ...).

    Attributes:
        monitor: the (first) Monitor of the current (or last) fit.
        monitors: every Monitor of that fit, one per watched optimizer.
        findings: the findings printed at the end of the last fit (of every Monitor).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        optimizer_index: int | None = None,
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
        self.monitors: list[Monitor] = []
        self.findings: list[Any] = []
        self._closure_handles: list[Any] = []
        self._early: dict[int, Monitor] = {}  # id(torch optimizer) -> Monitor taking pre-clip stats
        self._loss: torch.Tensor | None = None
        self._seen_steps: list[int] = []

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._close()
        optimizers = list(trainer.optimizers)
        if not optimizers:
            raise GradguardError(
                "GradguardCallback found no optimizer on the trainer; return one from "
                "configure_optimizers()"
            )
        index = self.optimizer_index
        if index is not None and not 0 <= index < len(optimizers):
            raise GradguardError(
                f"optimizer_index={index} but the trainer has {len(optimizers)} "
                f"optimizer(s); pass optimizer_index between 0 and {len(optimizers) - 1}"
            )
        watched: list[tuple[str | None, Any, Any]] = []  # (submodule name, module, torch optimizer)
        if index is not None or len(optimizers) == 1:
            watched.append((None, pl_module, unwrap_optimizer(optimizers[index or 0])))
        else:
            for k, wrapped in enumerate(optimizers):
                opt = unwrap_optimizer(wrapped)
                sub = _module_of(pl_module, opt)
                if sub is None:
                    raise GradguardError(
                        f"GradguardCallback: the trainer has {len(optimizers)} optimizers and the "
                        f"parameters of optimizer {k} ({type(opt).__name__}) are not exactly those "
                        "of one submodule, so they cannot get a Monitor each; give each optimizer "
                        "one submodule's parameters (e.g. self.generator.parameters()) or pass "
                        "optimizer_index=k to watch the whole module with optimizer k"
                    )
                watched.append((sub[0], sub[1], opt))
        self.monitors = []
        for sub_name, module, opt in watched:
            # Registered before the Monitor's hooks: the closure runs before gradients are read.
            self._closure_handles.append(opt.register_step_pre_hook(run_closure_first))
            prefix = self.logger_prefix + (f"{sub_name}/" if sub_name else "")
            sinks = list(self.sinks) if not self.monitors else []  # extra sinks: the first Monitor
            if self.log_to_logger:
                sinks.append(_LoggerSink(trainer, prefix))
            name = self.name
            if sub_name:
                name = f"{self.name or 'run'}.{sub_name}"
            mon = Monitor(
                module,
                opt,
                store=self.store,
                name=name,
                sinks=sinks,
                run_config={
                    "trainer": "lightning",
                    "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
                    "automatic_optimization": bool(pl_module.automatic_optimization),
                    "optimizers": len(optimizers),
                    "module": sub_name or "",
                },
                **self.watch_options,
            )
            self.monitors.append(mon)
            if type(opt).__name__ != "LBFGS":  # LBFGS evaluates the closure several times per step
                self._early[id(opt)] = mon
        self.monitor = self.monitors[0]
        self._loss, self._seen_steps = None, [0] * len(self.monitors)
        self.findings = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        # After backward (and AMP's unscale), before Lightning's gradient clipping: pre-clip numbers.
        try:
            early = self._early.get(id(unwrap_optimizer(optimizer)))
        except GradguardError:
            return
        if early is not None:
            early.take_gradients_now()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.monitors:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.detach().reshape(())
            if pl_module.automatic_optimization:  # micro-batch losses come divided by the count
                self._loss = loss if self._loss is None else self._loss + loss
            else:
                self._loss = loss
        stepped = False
        for k, mon in enumerate(self.monitors):
            if mon.step_count != self._seen_steps[k]:  # this optimizer stepped during this batch
                self._seen_steps[k] = mon.step_count
                stepped = True
                if self._loss is not None:
                    mon.log(loss=self._loss)
        if stepped:
            self._loss = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        findings: list[Any] = []
        for mon in self.monitors:
            findings.extend(final_findings(mon, show=self.show_findings))
        self.findings = findings
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        for mon in self.monitors:
            mon.event("exception", f"{type(exception).__name__}: {exception}")
        self._close()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._close()

    def _close(self) -> None:
        for h in self._closure_handles:
            h.remove()
        self._closure_handles.clear()
        self._early.clear()
        for mon in self.monitors:
            mon.close()


def _module_of(root: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[str, Any] | None:
    """The outermost submodule of ``root`` whose parameters are exactly ``opt``'s, with its name."""
    ids = {id(p) for group in opt.param_groups for p in group["params"]}
    for name, module in root.named_modules():
        if name and {id(p) for p in module.parameters()} == ids:
            return name, module
    return None
