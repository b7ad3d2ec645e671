"""The Recorder: the recording stage's lifecycle -- hooks on the optimizer and the root module, step
counting, the schedules, ``log``/``event``, flushing the device buffer into a :class:`Batch`, and
failure isolation.

How it stays cheap (see docs/design.md):
- Steps are counted by optimizer step hooks, so gradient accumulation gives one record per
  optimizer step. Gradient statistics are read in the step pre-hook, when every gradient is final
  (after DDP's all-reduce, after GradScaler's unscale).
- The probes (``record/probes/``) write every per-layer number of a step into a preallocated device
  buffer ``[flush_every, metrics, layers]`` with a few batched kernels; the host reads that buffer
  only at flush: no ``.item()`` per step or per parameter.
- Activation statistics need forward and tensor hooks; those are installed only for the steps the
  ``detail_every`` schedule selects and removed right after.

What becomes of a flushed :class:`Batch` (run log, store, sinks, online diagnosis) is not this
stage's business: :meth:`Recorder.publish` hands it on, and ``gradguard.watch.Monitor`` decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradguard.errors import GradguardError
from gradguard.model.activations import ACTIVATION_KINDS
from gradguard.model.layers import LayerInfo, discover_layers
from gradguard.model.tensors import local
from gradguard.record.batch import Batch, Event, Layer
from gradguard.record.budget import Budget, BudgetHooks
from gradguard.record.buffer import StepBuffer
from gradguard.record.checks import check_watch_args, loggable
from gradguard.record.config import WatchConfig, resolve_config
from gradguard.record.failures import Failures
from gradguard.record.fused import KERNEL_EVENT
from gradguard.record.probes.activations import ActivationProbe
from gradguard.record.probes.grads import GradientProbe
from gradguard.record.probes.update import UpdateProbe
from gradguard.record.reduce import Reducer, default_reducer
from gradguard.record.skips import ScalerWatch, skip_step
from gradguard.record.trace import FirstForwardTrace

__all__ = ["Recorder"]

# the parts that can fail and be switched off on their own
GRADS, UPDATE, ACTIVATIONS = "gradient statistics", "update ratio", "activations"
STRUCTURE, FLUSH = "structure", "flush"


class Recorder:
    """Records per-layer gradient, weight, update and activation statistics of a training run.

    Args:
        model: the network.
        optimizer: its optimizer (steps are counted by its hooks), or None: call :meth:`step`.
        config: a :class:`WatchConfig` or a preset name.
        reducer: how numbers combine across processes (default: torch.distributed's when up).
        run_config: the run's configuration; what the first forward learns (skip connections) is
            added to it and handed on with the next batch.
        **options: overrides of WatchConfig fields.

    Attributes:
        layers: the watched layers (:class:`~gradguard.model.layers.LayerInfo`), registration order.
        step_count: optimizer steps counted so far.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        config: WatchConfig | str | None = None,
        reducer: Reducer | None = None,
        run_config: Mapping[str, Any] | None = None,
        scaler: Any = None,
        **options: Any,
    ) -> None:
        check_watch_args(model, optimizer, scaler)
        self.config = resolve_config(config, **options)
        self.model = model
        self.optimizer = optimizer
        self.layers: list[LayerInfo] = discover_layers(model)
        # torch.distributed up with several ranks: numbers are combined across ranks (record/reduce.py)
        self.reducer: Reducer = reducer or default_reducer()
        self.reducer.bind(self.layers)
        self.step_count = 0
        self.failures = Failures(self.config.strict)
        # the schedules in force: the config's, or the ones an overhead budget adapts
        self.budget = Budget.of(self.config, self.reducer)
        self.record_schedule, self.detail_schedule = Budget.schedules_of(self.budget, self.config)
        self.costs = BudgetHooks(self)  # times this recorder's work for the budget
        self._flush_seconds = 0.0  # all flushes so far (a step's own cost leaves them out)
        self._closed = False
        self.run_config: dict[str, Any] = dict(run_config or {})
        self._config_changed = False  # the run config learned something since the last batch

        first = next(p for lay in self.layers for _, p in lay.params)
        self.device = local(first).device
        self.buffer = StepBuffer(self.config.flush_every, len(self.layers), self.device)
        self.trace = FirstForwardTrace(
            model, self.layers, look_for_skips="residual" not in self.run_config
        )
        self._structure_seen = False
        self.grads = GradientProbe(
            self.layers, self.device, self.reducer, kernel=self.config.stats_kernel
        )
        self.update = UpdateProbe(self.grads)
        act_modules = [m for m in model.modules() if type(m).__name__ in ACTIVATION_KINDS]
        self.activations = ActivationProbe(
            self.layers,
            act_modules,
            self.device,
            self.reducer,
            self.trace,
            sample=self.config.activation_sample,
        )
        self._layers_written = False
        self._update_step: int | None = None  # detail step whose weights were snapshot
        self._act_step: int | None = None  # detail step whose activation hooks are armed
        self._just_stepped = False
        self._taken_early: int | None = None  # step whose statistics take_gradients_now() took
        self._post_calls = 0  # optimizer step post-hook calls (a scaler.step without one skipped)

        # removable hooks owned by this recorder
        self._handles: list[Any] = [model.register_forward_pre_hook(self._on_root_forward)]
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._on_pre_step))
            self._handles.append(optimizer.register_step_post_hook(self._on_post_step))
        self.scaler = scaler
        if scaler is not None:
            self._handles.append(ScalerWatch(self, scaler))
        self._prepare_step(0)

    # ------------------------------------------------------------------ what becomes of a batch
    def publish(self, batch: Batch, *, wait: bool) -> None:
        """Hand a flushed batch on (the Monitor stores it, feeds sinks, diagnoses). Here: dropped."""

    # ------------------------------------------------------------------ hooks
    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        self._just_stepped = False
        self.activations.new_forward()

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._take_gradients()

    def _take_gradients(self) -> None:
        """The step's gradient statistics, unless take_gradients_now() took them before a clip."""
        if self._taken_early == self.step_count:
            self._taken_early = None
            return
        self._guarded(GRADS, self._pre_step)

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._post_calls += 1
        self._guarded(UPDATE, self._post_step)

    def take_gradients_now(self) -> None:
        """Take the current step's gradient (and detail) statistics now, before ``optimizer.step()``.

        For trainers that clip between backward and the step (Lightning's ``gradient_clip_val``,
        the Hugging Face Trainer's ``max_grad_norm``): called right before the clip (after the
        all-reduce and AMP's unscale), the recorded norms are the pre-clip gradients', and the
        optimizer's pre-step hook leaves this step alone. Nothing else changes: the weights are
        not touched until the step. If the step is then skipped (AMP's scaler found NaN/Inf), the
        next call takes the same step again.
        """
        if self._closed:
            return
        self._guarded(GRADS, self._pre_step)
        self._taken_early = self.step_count

    # ------------------------------------------------------------------ step lifecycle
    def step(self) -> None:
        """Count one training step in a loop without an optimizer object (call it after the update).

        Gradients must still be in ``.grad`` (zero them at the start of the next iteration);
        update_ratio compares the weights with those seen at the previous ``step()``.
        """
        if self.optimizer is not None:
            raise GradguardError(
                "mon.step() is for loops without an optimizer; this Monitor counts steps through the "
                "optimizer's hooks already (call optimizer.step() as usual)"
            )
        self._take_gradients()
        self._guarded(UPDATE, self._post_step)

    def mark_skipped(self, kind: str, message: str, **fields: Any) -> None:
        """Count an optimizer call that did not update the weights (GradScaler overflow, gg.Guard):
        the step keeps its number and an event ``kind`` (``scaler_skip``, ``guard_skip``) with the
        reason, has no per-layer rows (its gradients were thrown away), and what ``mon.log`` gets
        after the skipped call stays at its step."""
        if not self._closed:
            skip_step(self, kind, message, **fields)

    def _pre_step(self) -> None:
        t0, f0 = time.perf_counter(), self._flush_seconds
        try:
            self._measure_step()
        finally:
            self.costs.book(t0, f0)

    def _measure_step(self) -> None:
        s = self.step_count
        self._learn_structure()
        if self._act_step == s:
            self.activations.disarm()
        records, details = self._records(s), self._details(s)
        if self.budget is not None:
            self.budget.mark(recorded=records, detail=details)
        if not (records or details):
            return
        slot = self._slot(s)
        if records:
            # weight norms where a metric needs them: detail steps (the update ratio's ||w_before||)
            # and the first step of each flush, so every flush carries them for the rules
            self.grads.take(self.buffer, slot, weights=details or slot == 0)
        if self._act_step == s:
            self._act_step = None
            self._check_activations()
            if ACTIVATIONS not in self.failures:
                self._guarded(ACTIVATIONS, lambda: self.activations.write(self.buffer, slot))
        if self.optimizer is not None:
            self.buffer.write_lr(slot, self.optimizer.param_groups[0].get("lr", math.nan))
            if self._update_step == s:  # snapshot now: the weights right before the real update
                self.update.snapshot()

    def _post_step(self) -> None:
        t0, f0 = time.perf_counter(), self._flush_seconds
        s = self.step_count
        slot = self.buffer.slot_of(s)
        if self._update_step == s and self.update.before is not None and slot is not None:
            self.update.measure(self.buffer, slot, snapshot_at_grads=self.optimizer is not None)
            self._update_step = None
        self.step_count = s + 1
        self._just_stepped = True
        automatic = self.buffer.full
        if automatic:
            self.flush(wait=False)  # automatic: the commit happens on the writer thread
        self.costs.book(t0, f0)
        self.costs.end_step(at_flush=automatic)
        t0, f0 = time.perf_counter(), self._flush_seconds
        self._prepare_step(self.step_count)
        self.costs.book(t0, f0)  # booked to the coming step

    def _prepare_step(self, s: int) -> None:
        """Arm the detail probes for step ``s`` if the schedule selects it."""
        if self._closed or not self._details(s):
            return
        if self.config.update_ratio and UPDATE not in self.failures:
            self._update_step = s
            if self.optimizer is None:  # manual loop: the weights now are the weights before step s
                self.update.snapshot()
        if self.config.activations and ACTIVATIONS not in self.failures:
            self._act_step = s
            self.activations.arm()

    def _records(self, s: int) -> bool:
        return bool(self.record_schedule(s))

    def _details(self, s: int) -> bool:
        return bool(self.detail_schedule(s)) and (
            self.config.activations or self.config.update_ratio
        )

    def _slot(self, s: int) -> int:
        if self.buffer.slot_of(s) is None and self.buffer.full:
            self.flush(wait=False)
        return self.buffer.slot(s)

    def _check_activations(self) -> None:
        """Report a failure the activation hooks caught (they never raise into the forward pass)."""
        e = self.activations.error
        if e is not None:
            self.activations.error = None
            self._fail(ACTIVATIONS, e)

    def _learn_structure(self) -> None:
        """Once the first forward was traced, what it learned (skip connections) goes into the
        run config, stored with the next flush."""
        if self._structure_seen or not self.trace.done:
            return
        self._structure_seen = True
        if self.trace.error is not None:
            self._fail(STRUCTURE, self.trace.error)
            return
        self._config_changed = self.trace.update_run_config(self.run_config)

    # ------------------------------------------------------------------ user API
    def log(self, **scalars: float | int | torch.Tensor) -> None:
        """Record scalars (numbers or 0-d tensors) at the current step, without a host sync.

        Called after ``optimizer.step()``, values belong to the step just taken (the loss that
        produced its gradients); called before it, to the step about to be taken.
        """
        if self._closed:
            return
        step = self.step_count - 1 if self._just_stepped else self.step_count
        for k, v in scalars.items():
            self.buffer.log(max(step, 0), k, loggable(k, v))

    def event(
        self,
        kind: str,
        message: str = "",
        *,
        layer: str | None = None,
        value: float | torch.Tensor | None = None,
        step: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an event (a skipped step, a finding, a clip...) at ``step`` (default: the current one)."""
        if isinstance(value, torch.Tensor):
            value = float(value.detach().float().cpu())  # events are rare: a sync here is fine
        if step is None:  # same attribution as log(): after optimizer.step(), the step just taken
            step = max(self.step_count - 1 if self._just_stepped else self.step_count, 0)
        ev = Event(
            step=step, kind=kind, layer=layer, value=value, message=message, data=dict(data or {})
        )
        self.buffer.add_event(ev)

    @property
    def layer_order(self) -> list[int]:
        """Columns (registration order) of the layers in forward order."""
        return self.trace.column_order(self.layers)

    def recorded_layers(self) -> list[Layer]:
        """The layer table as stored: forward order, with the activation that follows each layer."""
        return self.trace.layer_table(self.layers)

    def flush(self, *, wait: bool = True) -> None:
        """Read the device buffer once and hand everything recorded so far on.

        With ``wait=True`` (the default) it returns once the batch is committed to the store: what
        was flushed survives a kill -9 of this process. Automatic flushes (every ``flush_every``
        steps) don't wait.
        """
        if self._closed:
            return
        t0 = time.perf_counter()
        try:
            self._learn_structure()
            if (kernel := self.grads.decide_kernel()) is not None:  # once, off the step path
                self.event(
                    KERNEL_EVENT, f"gradient statistics: {kernel['kernel']} kernel", data=kernel
                )
            batch = self.buffer.to_batch(self.layer_order, with_lr=self.optimizer is not None)
            if not self._layers_written and (self.trace.done or not batch.empty):
                batch.layers = self.recorded_layers()
                self._layers_written = self.trace.done
            if self._config_changed:
                batch.config, self._config_changed = dict(self.run_config), False
            self.publish(batch, wait=wait)
        except Exception as e:
            self._fail(FLUSH, e)
        finally:
            dt = time.perf_counter() - t0
            self._flush_seconds += dt
            if self.budget is not None:
                self.budget.add_flush(dt)

    def close(self) -> None:
        """Flush, hand the last batch on, and remove every hook. Safe to call twice."""
        if self._closed:
            return
        try:
            self.detach()
            self.costs.close()
            self.flush()
        finally:
            self._closed = True

    def detach(self) -> None:
        """Remove every hook this recorder installed (nothing more is recorded; nothing is flushed)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.trace.remove()
        self.activations.disarm()
        self.update.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ failure isolation
    def _guarded(self, part: str, fn: Any) -> None:
        if not self._closed:
            self.failures.guard(part, fn)

    def _fail(self, part: str, e: BaseException) -> None:
        self.failures.fail(part, e)
        if part == ACTIVATIONS:
            self.activations.disarm()
            self._act_step = None
