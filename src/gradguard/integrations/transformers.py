"""Hugging Face ``transformers.Trainer``: a callback that watches the model during ``trainer.train()``.

>>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[GradguardCallback("runs/hf.db")])   # doctest: +SKIP

How it fits the Trainer (transformers 4.40+ / 5.x):

- ``on_train_begin`` gets ``model`` and ``optimizer`` (accelerate's ``AcceleratedOptimizer``); the
  Monitor watches the model and counts steps through the torch optimizer inside the wrapper, so
  ``gradient_accumulation_steps`` gives one record per optimizer step (= ``state.global_step``).
- Gradients are read **before** the Trainer clips them to ``max_grad_norm`` (default 1.0): the
  Trainer clips with ``self.accelerator.clip_grad_norm_`` between backward and
  ``on_pre_optimizer_step`` and offers no callback in between, so ``on_train_begin`` finds the
  Trainer (the caller of the callback, up the stack) and wraps its accelerator's ``clip_grad_norm_``
  for the run: the Monitor's statistics of the step are taken right after accelerate unscales the
  gradients (AMP) and before it clips; the original is put back at ``on_train_end``. Where the
  Trainer clips some other way (DeepSpeed, SageMaker MP, gradients on several device meshes) or no
  Trainer is found, the numbers are the post-clip ones of the optimizer pre-hook (a warning says so).
- The training loss of **every optimizer step** is recorded as ``loss``, without a host sync: the
  Trainer's ``training_step`` (found the same way) is wrapped for the run and each micro-batch's
  returned loss tensor goes to ``mon.log`` (scaled so that the step's value is the sum the Trainer
  itself accumulates, i.e. the step's mean loss under gradient accumulation); it is read at the
  next flush. Where no Trainer is found, ``on_log``'s ``loss`` (the mean over the logging interval,
  every ``logging_steps``) is recorded as ``loss`` instead; otherwise as ``hf_loss``. The Trainer's
  logged ``grad_norm`` is recorded as ``hf_grad_norm``.
- ``on_train_end``: findings printed (main process) and stored as events; the Monitor closed.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import torch

from gradguard.errors import GradguardError
from gradguard.integrations._common import final_findings, unwrap_optimizer
from gradguard.metrics import HF_GRAD_NORM, HF_LOSS, LOSS
from gradguard.watching import Monitor

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError(
        "gradguard.integrations.transformers needs transformers; install it with "
        "`pip install gradguard[transformers]`"
    ) from e

__all__ = ["GradguardCallback"]

# Trainer log keys recorded as scalars, and their names in the run.
_FROM_LOGS = {"loss": LOSS, "grad_norm": HF_GRAD_NORM}  # Trainer log key -> metric


class GradguardCallback(TrainerCallback):  # type: ignore[misc]
    """Watch a ``transformers.Trainer`` run's gradients.

    Args:
        store: SQLite store path (None: in memory only, see ``callback.monitor.run``).
        name: the run's name in the store (default: the Trainer's ``run_name`` if set).
        show_findings: print the findings at the end of training (main process).
        sinks: extra sinks (e.g. ``TensorBoardSink``).
        **watch_options: anything ``gg.watch`` takes (``config="light"``, ``detail_every=50``, ...).

    Attributes:
        monitor: the Monitor of the current (or last) ``train()``.
        findings: the findings of the last ``train()``.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        show_findings: bool = True,
        sinks: list[Any] | None = None,
        **watch_options: Any,
    ) -> None:
        self.store = store
        self.name = name
        self.show_findings = show_findings
        self.sinks = list(sinks or [])
        self.watch_options = watch_options
        self.monitor: Monitor | None = None
        self.findings: list[Any] = []
        self._early: Monitor | None = None  # the Monitor taking pre-clip statistics
        self._patched: Any = None  # the accelerator whose clip_grad_norm_ is wrapped
        self._stepping: Any = None  # the Trainer whose training_step is wrapped

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close()
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise GradguardError(
                "GradguardCallback.on_train_begin got no model/optimizer from the Trainer; "
                "add the callback to a transformers.Trainer (callbacks=[GradguardCallback(...)])"
            )
        run_name = getattr(args, "run_name", None)
        self.monitor = Monitor(
            model,
            unwrap_optimizer(optimizer),
            store=self.store,
            name=self.name or (run_name if run_name and run_name != args.output_dir else None),
            sinks=list(self.sinks),
            run_config={
                "trainer": "transformers",
                "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
                "max_grad_norm": float(args.max_grad_norm),
                "learning_rate": float(args.learning_rate),
            },
            **self.watch_options,
        )
        self.findings = []
        trainer = self._find_trainer()
        if trainer is not None:
            self._wrap_training_step(trainer)
        if float(args.max_grad_norm) > 0:  # the Trainer clips: take the statistics before it
            accelerator = getattr(trainer, "accelerator", None)
            if accelerator is None or not self._wrap_clip(accelerator):
                warnings.warn(
                    "gradguard: could not reach the Trainer's accelerator.clip_grad_norm_; gradient "
                    "statistics are read after the Trainer's clipping (max_grad_norm="
                    f"{args.max_grad_norm}); pass max_grad_norm=0 to record raw gradients",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def _find_trainer(self) -> Any:
        # The Trainer calls callback_handler.on_train_begin from one of its methods: find that frame.
        frame: Any = sys._getframe(1)
        for _ in range(16):
            if frame is None:
                break
            obj = frame.f_locals.get("self")
            handler = getattr(obj, "callback_handler", None)
            if handler is not None and any(cb is self for cb in getattr(handler, "callbacks", ())):
                return obj
            frame = frame.f_back
        return None

    def _wrap_training_step(self, trainer: Any) -> None:
        step = getattr(trainer, "training_step", None)
        if not callable(step) or "training_step" in vars(trainer) or self.monitor is None:
            return  # someone else patched it: leave it alone (on_log's loss is recorded then)
        mon = self.monitor

        def training_step(*a: Any, **kw: Any) -> Any:
            loss = step(*a, **kw)
            if isinstance(loss, torch.Tensor) and loss.numel() == 1 and mon is self.monitor:
                # each micro-batch's loss is scaled by 1/k (or normalised by the step's items):
                # the Trainer sums them; mon.log averages what one step logs, so log k times each
                k = getattr(trainer, "current_gradient_accumulation_steps", 1) or 1
                mon.log(**{LOSS: loss.detach() * float(k)})
            return loss

        trainer.training_step = training_step
        self._stepping = trainer

    def _wrap_clip(self, accelerator: Any) -> bool:
        clip = getattr(accelerator, "clip_grad_norm_", None)
        unscale = getattr(accelerator, "unscale_gradients", None)
        if not (callable(clip) and callable(unscale)) or self.monitor is None:
            return False
        if "unscale_gradients" in vars(accelerator):
            return False  # someone else patched it: leave it alone
        early = self._early = self.monitor

        def unscale_then_take(*a: Any, **kw: Any) -> Any:
            out = unscale(*a, **kw)
            early.take_gradients_now()  # unscaled (AMP), all-reduced, not clipped yet
            return out

        def clip_grad_norm_(parameters: Any, max_norm: float, *a: Any, **kw: Any) -> Any:
            if self._early is not early or not math.isfinite(float(max_norm)):
                return clip(parameters, max_norm, *a, **kw)  # inf: a norm only, nothing clipped
            # accelerate unscales right before it clips (every path but DeepSpeed's)
            accelerator.unscale_gradients = unscale_then_take
            try:
                return clip(parameters, max_norm, *a, **kw)
            finally:
                del accelerator.unscale_gradients

        self._patched = (accelerator, clip_grad_norm_, vars(accelerator).get("clip_grad_norm_"))
        accelerator.clip_grad_norm_ = clip_grad_norm_
        return True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self.monitor is None or not logs:
            return
        values = {}
        per_step = self._stepping is not None  # the loss of every step is recorded already
        for key, name in _FROM_LOGS.items():
            if name == LOSS and per_step:
                name = HF_LOSS
            v = logs.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                values[name] = float(v)
        if values:
            self.monitor.log(**values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.findings = final_findings(self.monitor, show=self.show_findings)
        self._close()

    def _close(self) -> None:
        if self._stepping is not None:
            vars(self._stepping).pop("training_step", None)  # the class's method again
            self._stepping = None
        if self._patched is not None:
            accelerator, wrapper, before = self._patched
            if vars(accelerator).get("clip_grad_norm_") is wrapper:
                if before is None:
                    del accelerator.clip_grad_norm_  # the class's method again
                else:
                    accelerator.clip_grad_norm_ = before
            self._patched = None
        self._early = None
        if self.monitor is not None:
            self.monitor.close()
