"""Hugging Face ``transformers.Trainer``: a callback that watches the model during ``trainer.train()``.

>>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[GradguardCallback("runs/hf.db")])   # doctest: +SKIP

How it fits the Trainer (transformers 4.40+ / 5.x):

- ``on_train_begin`` gets ``model`` and ``optimizer`` (accelerate's ``AcceleratedOptimizer``); the
  Monitor watches the model and counts steps through the torch optimizer inside the wrapper, so
  ``gradient_accumulation_steps`` gives one record per optimizer step (= ``state.global_step``).
- Gradients are read in the optimizer's step pre-hook, i.e. **after** the Trainer has clipped them
  to ``max_grad_norm`` (default 1.0): per-layer norms are post-clip. Clipping scales every layer by
  the same factor, so the profile across depth is unchanged; the pre-clip total norm the Trainer
  logs is recorded as the scalar ``hf_grad_norm``. Set ``max_grad_norm=0`` to see raw gradients.
- ``on_log``: the Trainer's ``loss`` (mean over the logging interval, already a host number) is
  recorded as ``loss`` at the step just taken, its ``grad_norm`` as ``hf_grad_norm``.
- ``on_train_end``: findings printed (main process) and stored as events; the Monitor closed.
"""

from __future__ import annotations

import math
import os
from typing import Any

from gradguard.errors import GradguardError
from gradguard.integrations._common import final_findings, unwrap_optimizer
from gradguard.monitor import Monitor

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError(
        "gradguard.integrations.transformers needs transformers; install it with "
        "`pip install gradguard[transformers]`"
    ) from e

__all__ = ["GradguardCallback"]

# Trainer log keys recorded as scalars, and their names in the run.
_FROM_LOGS = {"loss": "loss", "grad_norm": "hf_grad_norm"}


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

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self.monitor is None or not logs:
            return
        values = {}
        for key, name in _FROM_LOGS.items():
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
        if self.monitor is not None:
            self.monitor.close()
