"""``KerasMonitor``: per-layer gradient statistics from the optimizer's apply step of a Keras model.

Every Keras backend updates weights through ``optimizer.apply(grads, variables)`` (``model.fit``
on TensorFlow and PyTorch through ``apply_gradients``, JAX through ``stateless_apply``), so the
monitor wraps that method of the optimizer instance. The wrapper computes the statistics with
``keras.ops`` inside the compiled train step and writes them into a ring of ``slots`` rows kept in
optimizer variables (so JAX's functional train step carries them in its state). The host reads the
ring only at :meth:`KerasMonitor.flush`: a handful of reads per flush, none per step.

``model.fit`` also gets its ``train_step`` wrapped, which records the loss tracker's running total
and count before and after each step: the per-step loss is their difference, computed at flush.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.online import OnlineDiagnosis
from gradguard.errors import ConfigError
from gradguard.keras._activations import ACT_ROWS, describe, probe_for
from gradguard.keras._layers import KerasLayers, discover
from gradguard.keras._ring import frozen, index_of, now, put_cells, put_row
from gradguard.keras._rows import (
    COUNT1,
    SCALARS,
    TOTAL0,
    USER_LOSS,
    add_activations,
    to_batch,
)
from gradguard.keras._stats import ROWS, grad_rows, no_weight_rows, weight_rows
from gradguard.record.batch import Event, Layer
from gradguard.runs.log import RunLog
from gradguard.runs.run import Run
from gradguard.runs.store import Store

__all__ = ["KerasMonitor", "watch"]

log = logging.getLogger("gradguard")


class KerasMonitor:
    """Records per-layer gradient statistics of a Keras model's training into a gradguard run.

    Create it with :func:`gradguard.keras.watch` (custom loops) or let
    :class:`gradguard.keras.Watch` create it (``model.fit``).

    Attributes:
        layers: the recorded layers (forward order).
        host_reads: values read back to the host so far (a few per flush, none per step).
        run_log: the run so far (memory and store).
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        store: str | os.PathLike[str] | Store | None = None,
        name: str | None = None,
        flush_every: int = 100,
        detail_every: int = 10,
        diagnose_online: bool = True,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise ConfigError(
                f"gradguard.keras needs a keras.Model, got {type(model).__name__}; "
                "for a torch nn.Module use gg.watch(model, optimizer)"
            )
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ConfigError(
                f"gradguard.keras needs the model's keras optimizer, got {type(optimizer).__name__}; "
                "compile the model first (model.compile(optimizer=...)) or pass optimizer="
            )
        for label, value in (("flush_every", flush_every), ("detail_every", detail_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{label} must be an int >= 1, got {value!r}")
        table = discover(model)
        if not table.layers:
            raise ConfigError(
                f"model {model.name!r} has no trainable weights: nothing to record; "
                "build it first (call it on a batch or give it an Input)"
            )
        self.model, self.optimizer = model, optimizer
        self.table: KerasLayers = table
        self.layers: list[Layer] = table.layers
        self.flush_every, self.detail_every = flush_every, detail_every
        self.slots = 2 * flush_every  # room for a flush that comes late (steps_per_execution)
        self.host_reads = 0
        self.failures: dict[str, str] = {}
        self._read = 0  # device steps already flushed
        self._closed = False
        # float64 models keep float64 statistics (the lab's sweeps span 1e-90 .. 1e30)
        wide = any(str(v.dtype) == "float64" for v in model.trainable_variables)
        self._dtype = "float64" if wide else "float32"
        self._numel = np.array([max(lay.numel, 1) for lay in table.layers], dtype=np.float64)
        self.probe = probe_for(model, table)
        opened = None
        if store is not None:
            opened = store if isinstance(store, Store) else Store(store)
        config = {
            "framework": "keras",
            "keras_backend": keras.backend.backend(),
            "watch": {
                "flush_every": flush_every,
                "detail_every": detail_every,
                "diagnose_online": diagnose_online,
            },
            "optimizer": type(optimizer).__name__,
            "model": type(model).__name__,
            "residual": table.residual,
            **describe(self.probe),
            **dict(run_config or {}),
        }
        diagnosis = DiagnosisConfig()
        self.run_log = RunLog(
            name,
            config,
            store=opened,
            environment=_environment(),
            # what the online rules read must stay in memory while the store holds the rest
            keep_head=diagnosis.start_steps if diagnose_online else 0,
            keep_tail=diagnosis.online_window if diagnose_online else 0,
        )
        self.run_name = self.run_log.name
        # the rules of gg.watch's online diagnosis, at each flush; findings go into the run
        self.online = (
            OnlineDiagnosis(self.run_log, self.run_log.append, diagnosis)
            if diagnose_online
            else None
        )
        self._layers_sent = False
        # TensorFlow with detail steps in between: the update runs inside the detail conditional
        self._branched = keras.backend.backend() == "tensorflow" and detail_every > 1
        try:
            self._make_ring()
            self._wrap()
        except BaseException:
            self.run_log.close()
            raise

    # ------------------------------------------------------------------ device side
    def _make_ring(self) -> None:
        opt, n_layers = self.optimizer, len(self.layers)
        # optimizer variables: JAX's train step carries them in its state like Adam's moments
        self._rows = opt.add_variable(
            (self.slots, ROWS, n_layers), dtype=self._dtype, name="gradguard_rows"
        )
        self._scalars = opt.add_variable((self.slots, SCALARS), name="gradguard_scalars")
        self._steps = opt.add_variable((self.slots,), dtype="int32", name="gradguard_steps")
        self._count = opt.add_variable((), dtype="int32", name="gradguard_count")
        self._ring = [self._rows, self._scalars, self._steps, self._count]
        self._acts = None
        if self.probe is not None:
            # NaN until a detail step writes its row (a custom loop never does: no batch here)
            nan = keras.initializers.Constant(math.nan)
            shape = (self.slots, ACT_ROWS, n_layers)
            self._acts = opt.add_variable(shape, initializer=nan, name="gradguard_acts")
            self._ring.append(self._acts)

    def _wrap(self) -> None:
        opt, model = self.optimizer, self.model
        self._orig_apply = opt.__dict__.get("apply")
        self._orig_train_step = model.__dict__.get("train_step")
        apply, train_step = opt.apply, model.train_step

        def watched_apply(grads: Any, trainable_variables: Any = None) -> Any:
            before = self._guard(
                "gradient statistics", lambda: self._before(grads, trainable_variables)
            )
            if before is not None and before.branched:
                wrows = self._guard(
                    "weight statistics",
                    lambda: self._branched_apply(apply, grads, trainable_variables, before),
                )
                if wrows is not None:  # the update ran inside the branches
                    self._guard("gradient statistics", lambda: self._write(before, wrows))
                    return None
            out = apply(grads, trainable_variables)
            if before is not None:
                self._guard("gradient statistics", lambda: self._after(before))
            return out

        opt.apply = watched_apply
        if keras.backend.backend() == "jax":
            model.train_step = self._jax_train_step(train_step)
        else:
            model.train_step = self._train_step(train_step)
        model.train_function = None  # fit builds its step again, with the wrapped methods

    def _before(self, grads: Any, variables: Any) -> _Pending:
        opt = self.optimizer
        variables = list(variables) if variables is not None else list(opt._trainable_variables)
        pairs = [
            (g, v)
            for g, v in zip(grads, variables)
            if g is not None and id(v) in self.table.columns
        ]
        mask = np.zeros((len(pairs), len(self.layers)), dtype=bool)
        for i, (_, v) in enumerate(pairs):
            mask[i, self.table.columns[id(v)]] = True
        dense = [ops.convert_to_tensor(g) for g, _ in pairs]
        scale = opt.loss_scale_factor
        if scale is not None:  # apply() unscales the gradients it is given
            dense = [g / scale for g in dense]
        # copies: the PyTorch backend increments `iterations` in place, and a cast to the same
        # dtype hands back the tensor itself
        step = frozen(ops.cast(opt.iterations, "int32"))
        lr = frozen(ops.cast(opt.learning_rate, "float32"))
        detail = self._detail(step)
        rows = grad_rows(dense, mask, self._dtype)
        branched = self._use_branch()
        snapshot = (
            dense  # nothing reads them: _branched_apply takes its own snapshot
            if branched
            else _snapshot(detail, [v for _, v in pairs], dense)
        )
        return _Pending(pairs, snapshot, rows, step, lr, mask, detail, branched)

    def _detail(self, step: Any) -> Any:
        """True on detail steps: a Python bool when every step is one, else a traced boolean."""
        return True if self.detail_every == 1 else ops.equal(step % self.detail_every, 0)

    def _after(self, p: _Pending) -> None:
        """After the plain update: the weight rows (detail steps) and this step's ring rows."""
        dtype, n_layers = self._dtype, len(self.layers)

        def measured() -> Any:
            return weight_rows(p.snapshot, [v.value for _, v in p.pairs], p.mask, dtype)

        if p.branched:
            # the branched update failed to build: `snapshot` holds no snapshot
            wrows = no_weight_rows(n_layers, dtype)
        elif p.detail is True:
            wrows = measured()
        else:
            wrows = ops.cond(p.detail, measured, lambda: no_weight_rows(n_layers, dtype))
        self._write(p, wrows)

    def _use_branch(self) -> bool:
        """Whether :meth:`_branched_apply` runs the update (TensorFlow, detail steps in between,
        no tf.distribute strategy: an optimizer's cross-replica merge cannot run in a branch)."""
        if not self._branched:
            return False
        import tensorflow as tf

        return not tf.distribute.has_strategy()

    def _branched_apply(
        self, apply: Callable[..., Any], grads: Any, variables: Any, p: _Pending
    ) -> Any:
        """TensorFlow: the whole update inside the detail-step conditional: snapshot, update and
        the weight rows in one branch, the update alone in the other. Only the (3, L) rows leave
        the conditional; with the snapshot in a conditional of its own, XLA (``jit_compile``)
        copied every gradient into the conditional's outputs each step (-90 us a step on the
        benchmark's MLP under XLA, the same without). Returns the weight rows."""
        pairs, mask = p.pairs, p.mask
        opt, dtype = self.optimizer, self._dtype
        if not opt.built:  # variables cannot be created inside a branch
            opt.build(list(variables) if variables is not None else [v for _, v in pairs])
            opt.built = True

        def measured() -> Any:
            snap = [ops.copy(v.value) for _, v in pairs]
            apply(grads, variables)
            return weight_rows(snap, [v.value for _, v in pairs], mask, dtype)

        def plain() -> Any:
            apply(grads, variables)
            return no_weight_rows(len(self.layers), dtype)

        return ops.cond(p.detail, measured, plain)

    def _write(self, p: _Pending, wrows: Any) -> None:
        """This step's row of every ring: gradient rows, weight rows, scalars and the step."""
        rows, step, lr, detail = p.rows, p.step, p.lr, p.detail
        rows = ops.stack([rows[0], rows[1], wrows[0], rows[2] + wrows[2], wrows[1]])
        count = self._count.value
        slot = count % self.slots
        self._rows.assign(put_row(self._rows.value, slot, rows))
        flag = ops.cast(ops.convert_to_tensor(detail), "float32")
        scal = ops.stack([lr, *([ops.full((), math.nan, "float32")] * USER_LOSS), flag])
        self._scalars.assign(put_row(self._scalars.value, slot, scal))
        self._steps.assign(put_row(self._steps.value, slot, step))
        self._count.assign(count + 1)

    def _tracker(self) -> Any:
        return getattr(self.model, "_loss_tracker", None)

    def _train_step(self, train_step: Callable[..., Any]) -> Callable[..., Any]:
        """TensorFlow / PyTorch: the loss tracker's total and count around the step."""

        def watched_train_step(*args: Any, **kwargs: Any) -> Any:
            data = args[0] if args else kwargs.get("data")

            self._record_data(data)  # weights before the update, as in the step's own forward
            tracker = self._tracker()
            if tracker is None:
                return train_step(*args, **kwargs)
            t0, c0 = now(tracker.total), now(tracker.count)
            logs = train_step(*args, **kwargs)

            def record() -> None:
                t1, c1 = now(tracker.total), now(tracker.count)
                self._scalars.assign(
                    self._loss_into(self._scalars.value, self._count.value, t0, c0, t1, c1)
                )

            self._guard("loss", record)
            return logs

        return watched_train_step

    def _jax_train_step(self, train_step: Callable[..., Any]) -> Callable[..., Any]:
        """JAX: the same numbers, taken from and written into the functional state."""

        def watched_train_step(state: Any, data: Any) -> Any:
            logs, new_state = train_step(state, data)
            ovars = list(self.optimizer.variables)

            def acts() -> Any:
                model = self.model
                mapping = list(zip(model.trainable_variables, state[0])) + list(
                    zip(model.non_trainable_variables, state[1])
                )
                step = state[2][index_of(ovars, self.optimizer.iterations)]
                with keras.StatelessScope(state_mapping=mapping):
                    rows = self._act_rows(data, ops.cast(step, "int32"))
                ai = index_of(ovars, self._acts)
                slot = state[2][index_of(ovars, self._count)] % self.slots
                opt_state = list(new_state[2])
                opt_state[ai] = put_row(opt_state[ai], slot, rows)
                return (new_state[0], new_state[1], opt_state, new_state[3])

            if self._acts is not None:
                new_state = self._guard("activation statistics", acts) or new_state
            tracker = self._tracker()
            if tracker is None:
                return logs, new_state

            def record() -> Any:
                mvars = list(self.model.metrics_variables)
                ti, ci = index_of(mvars, tracker.total), index_of(mvars, tracker.count)
                ovars = list(self.optimizer.variables)
                si, ki = index_of(ovars, self._scalars), index_of(ovars, self._count)
                opt_state = list(new_state[2])
                opt_state[si] = self._loss_into(
                    opt_state[si],
                    opt_state[ki],
                    state[3][ti],
                    state[3][ci],
                    new_state[3][ti],
                    new_state[3][ci],
                )
                return (new_state[0], new_state[1], opt_state, new_state[3])

            out = self._guard("loss", record)
            return logs, (out if out is not None else new_state)

        return watched_train_step

    def _act_rows(self, data: Any, step: Any) -> Any:
        """(ACT_ROWS, L) activation rows on detail steps, NaN on the others."""
        assert self.probe is not None
        probe = self.probe
        if self.detail_every == 1:
            return probe.rows(data, self._guard)
        nan = ops.full((ACT_ROWS, len(self.layers)), math.nan, "float32")
        return ops.cond(
            ops.equal(step % self.detail_every, 0),
            lambda: probe.rows(data, self._guard),
            lambda: nan,
        )

    def _loss_into(self, scal: Any, count: Any, t0: Any, c0: Any, t1: Any, c1: Any) -> Any:
        """``scal`` with the tracker's (total, count) before and after written into the row of
        the step that ``apply`` just recorded (``count`` is past it)."""
        slot = (count - 1) % self.slots
        vals = ops.stack([ops.cast(x, "float32") for x in (t0, c0, t1, c1)])
        return put_cells(scal, slot, range(TOTAL0, COUNT1 + 1), vals)

    def record_loss(self, loss: Any) -> None:
        """Record this step's loss from inside a custom train step, after ``optimizer.apply``
        (graph-safe: no host read). Not for JAX's stateless loops (use ``model.fit`` there)."""

        def record() -> None:
            slot = (self._count.value - 1) % self.slots
            value = ops.reshape(ops.cast(ops.mean(loss), "float32"), (1,))
            self._scalars.assign(put_cells(self._scalars.value, slot, [USER_LOSS], value))

        self._guard("loss", record)

    def record_batch(self, x: Any, y: Any = None, sample_weight: Any = None) -> None:
        """Activation statistics (and dL/dh, given ``y`` and a compiled loss) of this step's batch
        from inside a custom train step, before ``optimizer.apply`` (graph-safe, detail steps
        only). ``model.fit`` needs no call. Not for JAX's stateless loops."""
        self._record_data(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    def _record_data(self, data: Any) -> None:
        """``record_batch`` of ``data`` as ``train_step`` gets it."""

        def acts() -> None:
            assert self._acts is not None and self.probe is not None
            step = frozen(ops.cast(self.optimizer.iterations, "int32"))
            slot = self._count.value % self.slots  # the row apply() is about to write
            self._acts.assign(put_row(self._acts.value, slot, self._act_rows(data, step)))

        if self._acts is not None:
            self._guard("activation statistics", acts)

    def _guard(self, part: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; a failure is reported once and leaves the training alone."""
        if part in self.failures or self._closed:
            return None
        try:
            return fn()
        except Exception as e:
            self.failures[part] = f"{type(e).__name__}: {e}"
            log.error("gradguard: %s failed and is switched off: %s", part, e)
            warnings.warn(
                f"gradguard: {part} failed and is switched off ({type(e).__name__}: {e}); "
                "the training goes on unrecorded for this part",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    # ------------------------------------------------------------------ host side
    def step(self) -> None:
        """Count one training step on the host (outside the compiled step); flushes every
        ``flush_every`` steps. Reads nothing between flushes."""
        self._host_steps = getattr(self, "_host_steps", 0) + 1
        if self._host_steps % self.flush_every == 0:
            self.flush()

    def _host(self, variable: Any) -> np.ndarray:
        """The one place a value comes back to the host."""
        self.host_reads += 1
        return np.asarray(ops.convert_to_numpy(variable.value))

    def flush(self) -> int:
        """Read the steps recorded since the last flush and hand them to the run log (and store).

        Under JAX inside ``model.fit`` the trainer's state is synced to the variables first.
        Returns the number of steps flushed.
        """
        if self._closed:
            return 0
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()
        count = int(self._host(self._count))
        new = count - self._read
        if new <= 0:
            return 0
        rows, scal, steps = (self._host(v) for v in (self._rows, self._scalars, self._steps))
        acts = self._host(self._acts) if self._acts is not None else None
        events: list[Event] = []
        lost = max(0, new - self.slots)
        if lost:
            events.append(
                Event(
                    None,
                    "gradguard_lost_steps",
                    value=float(lost),
                    message=f"{lost} steps were overwritten before a flush; "
                    f"flush at least every {self.slots} steps",
                )
            )
        idx = np.arange(self._read + lost, count) % self.slots
        self._read = count
        at = steps[idx].astype(np.int64)
        layers = None if self._layers_sent else list(self.layers)
        self._layers_sent = True
        batch = to_batch(rows[idx], scal[idx], at, self._numel, events, layers)
        if acts is not None:
            add_activations(batch, acts[idx], at)
        self.run_log.append(batch)
        online = self.online
        if online is not None:
            self._guard("online diagnosis", lambda: online.write(batch, self.layers))
        return len(idx)

    @property
    def run(self) -> Run:
        """Everything flushed so far, as a :class:`~gradguard.runs.run.Run`."""
        return self.run_log.run(self.layers)

    def close(self) -> None:
        """Flush, wait for the store, unwrap the optimizer and the model, drop the ring
        variables from the optimizer. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            try:
                self._unwrap()
            finally:
                self.run_log.close()

    def _unwrap(self) -> None:
        opt, model = self.optimizer, self.model
        for obj, attr, orig in (
            (opt, "apply", self._orig_apply),
            (model, "train_step", self._orig_train_step),
        ):
            if orig is None:
                obj.__dict__.pop(attr, None)
            else:
                setattr(obj, attr, orig)
        model.train_function = None
        ring = {id(v) for v in self._ring}
        drop = [i for i, v in enumerate(opt._variables) if id(v) in ring]
        for i in reversed(drop):  # by position: a tracked list compares variables by value
            opt._variables.pop(i)

    def __enter__(self) -> KerasMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pending(NamedTuple):
    """What ``_before`` computed ahead of the update, for the ring rows written after it."""

    pairs: list[Any]  # (gradient, variable) of the recorded variables
    snapshot: list[Any]  # the weights before the update (plain path, detail steps)
    rows: Any  # (3, L) gradient rows
    step: Any
    lr: Any
    mask: np.ndarray  # (V, L) variable -> layer
    detail: Any  # True, or a traced boolean
    branched: bool  # the update runs inside the detail conditional (_branched_apply)


def _snapshot(detail: Any, variables: list[Any], grads: list[Any]) -> list[Any]:
    """The variables' values before the update, for the update's norm on detail steps.

    JAX arrays never change: the values themselves, at no cost. TensorFlow hands back the
    variable's buffer (an assignment while the read is alive copies the whole buffer) and torch
    updates in place, so those read the weights on detail steps only; other steps get the
    gradients (same shapes, alive anyway), which nothing reads.
    """
    if keras.backend.backend() == "jax":
        return [v.value for v in variables]

    def read() -> list[Any]:
        return [ops.copy(v.value) for v in variables]

    if detail is True:
        return read()
    return list(
        ops.cond(detail, read, lambda: [ops.cast(g, v.dtype) for g, v in zip(grads, variables)])
    )


def _environment() -> dict[str, Any]:
    from gradguard import __version__

    return {
        "gradguard": __version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "pid": os.getpid(),
    }


def watch(
    model: Any,
    optimizer: Any = None,
    *,
    store: str | os.PathLike[str] | Store | None = None,
    name: str | None = None,
    flush_every: int = 100,
    detail_every: int = 10,
    diagnose_online: bool = True,
) -> KerasMonitor:
    """Watch a Keras model trained in a custom loop (``optimizer.apply(grads, variables)``).

    Create it before the train step is traced (before the first call of a ``tf.function`` /
    ``jax.jit`` step). Call ``mon.flush()`` at least every ``2 * flush_every`` steps (outside
    the compiled step) and ``mon.close()`` at the end, or use it as a context manager.

    Args:
        model: the ``keras.Model``.
        optimizer: its ``keras.optimizers.Optimizer`` (default: ``model.optimizer``).
        store: path of the SQLite store (same schema as ``gg.watch``), or None (memory only).
        name: the run's name in the store.
        flush_every: steps between flushes (the device ring holds twice as many).
        detail_every: steps between measurements of the weights (norm, update ratio) and the
            activations.
        diagnose_online: run gg.watch's online diagnosis rules at each flush (a warning per new
            finding, kept in the run as an event).

    >>> with gradguard.keras.watch(model, opt, store="runs/k.db") as mon:   # doctest: +SKIP
    ...     for x, y in data:
    ...         train_step(x, y)          # calls opt.apply(grads, model.trainable_variables)
    ...         mon.step()
    """
    return KerasMonitor(
        model,
        optimizer,
        store=store,
        name=name,
        flush_every=flush_every,
        detail_every=detail_every,
        diagnose_online=diagnose_online,
    )
