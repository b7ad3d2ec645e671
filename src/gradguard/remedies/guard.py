"""``Guard``: skip optimizer steps with a non-finite loss/gradient or a gradient-norm spike.

>>> guard = gg.Guard(model, optimizer, rollback=True)      # doctest: +SKIP
>>> loss.backward(); stepped = guard.step(loss=loss)        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradguard.errors import ConfigError, GradguardError
from gradguard.record.checks import check_optimizer_owns
from gradguard.record.kernels import total_norm
from gradguard.remedies._checks import check_module, check_number, check_optimizer
from gradguard.remedies._guard_event import GuardEvent
from gradguard.remedies.locate import locate_nonfinite

__all__ = ["Guard", "GuardEvent"]


class Guard:
    """Call ``guard.step()`` instead of ``optimizer.step()``; bad steps are skipped.

    A step is bad when the loss (if given) or any gradient is NaN/Inf, or when the global
    gradient norm is a spike: its robust z-score ``(norm - median) / (1.4826 * MAD)`` against
    the last ``history`` good norms exceeds ``max_norm_z`` (checked after ``warmup`` good
    steps; the scale is floored at 1% of the median). During the warm-up a blow-up in the first
    steps is not let through: a norm above ``warmup_factor`` times the largest good norm so far,
    or a loss above ``warmup_factor`` times the first good (positive) loss, is a spike too (an
    absolute rule, said so in the event: the z-score has no statistics yet). A bad step is not taken, a
    :class:`GuardEvent` is appended to ``guard.events`` (and sent to ``monitor.event`` when
    attached through ``gg.watch(..., guard=guard)``), with ``rollback=True`` the model and
    optimizer go back to the last snapshot (deep copies on the device, taken at start and
    every ``snapshot_every`` good steps), and every param group's learning rate is multiplied
    by ``lr_backoff`` (default: 0.5 with rollback, 1 = unchanged without; a value you pass is
    applied on every skip, with or without rollback). On the first non-finite event, if the
    batch was passed, the guard replays it with :func:`~gradguard.locate_nonfinite` and puts
    the location in the event.

    Cost: one host sync per step (the norm and loss, and with a scaler its overflow flag, are
    read together to decide), as torch.amp.GradScaler does; the norm is one foreach pass over
    the gradients.

    With ``scaler=`` (a ``torch.amp.GradScaler``): pass the *unscaled* loss; ``guard.step()``
    replaces ``scaler.step(optimizer); scaler.update()`` and unscales first if you did not. A
    step where the scaler found an inf/NaN gradient (an fp16 overflow, in the backward or
    already in the loss) is the scaler's skip: its scale backs off, ``guard.scaler_skips`` counts
    it, and it is no GuardEvent (no rollback, no lr backoff; in an attached Monitor it is marked
    skipped as a ``scaler_skip``). The guard reads the scaler's
    overflow flag itself and then calls ``optimizer.step()`` and ``scaler.update()`` (what
    ``scaler.step`` would do, without its second sync).

    Args:
        model: the trained model.
        optimizer: its optimizer.
        max_norm_z: robust z-score above which a gradient norm is a spike (None: no check).
        history: how many past good norms the z-score uses.
        warmup: good steps before the z-score is used.
        warmup_factor: during the warm-up, a norm (or positive loss) this many times the largest
            good norm (the first good loss) is a spike (> 1; None: nothing is checked then).
        rollback: restore the last snapshot (and back the learning rate off) on a bad step.
        snapshot_every: good steps between snapshots (rollback only).
        lr_backoff: factor in (0, 1] applied to every learning rate on each skip; None (the
            default): 0.5 with ``rollback=True``, no backoff without.
        scaler: a GradScaler to drive (see above).
        loss_fn: ``loss_fn(output, target)`` used to replay a batch for locate_nonfinite.
        locate: replay the batch on the first non-finite event (needs ``inputs``/``batch``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        max_norm_z: float | None = 10.0,
        history: int = 100,
        warmup: int = 20,
        warmup_factor: float | None = 10.0,
        rollback: bool = False,
        snapshot_every: int = 100,
        lr_backoff: float | None = None,
        scaler: Any = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        locate: bool = True,
    ) -> None:
        self.model = check_module(model, "Guard")
        self.optimizer = check_optimizer(optimizer, "Guard")
        check_optimizer_owns(self.model, self.optimizer, "Guard")
        for flag, v in (("rollback", rollback), ("locate", locate)):
            if not isinstance(v, bool):
                raise ConfigError(f"{flag} must be True or False, got {v!r}")
        self.max_norm_z = (
            None if max_norm_z is None else check_number("max_norm_z", max_norm_z, low=0.0)
        )
        history = int(check_number("history", history, low=2, low_inclusive=True, integer=True))
        self.warmup = int(check_number("warmup", warmup, low=0, low_inclusive=True, integer=True))
        self.warmup_factor = (
            None if warmup_factor is None else check_number("warmup_factor", warmup_factor, low=1.0)
        )
        self.snapshot_every = int(
            check_number("snapshot_every", snapshot_every, low=1, low_inclusive=True, integer=True)
        )
        if lr_backoff is None:
            lr_backoff = 0.5 if rollback else 1.0
        self.lr_backoff = check_number("lr_backoff", lr_backoff, low=0.0, high=1.0)
        if scaler is not None and not all(
            callable(getattr(scaler, a, None)) for a in ("unscale_", "step", "update", "get_scale")
        ):
            raise GradguardError(
                f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}; "
                "pass scaler=torch.amp.GradScaler(...) or leave it out"
            )
        if loss_fn is not None and not callable(loss_fn):
            raise GradguardError(
                f"loss_fn must be callable, got {type(loss_fn).__name__}; pass e.g. F.mse_loss"
            )
        self.rollback = bool(rollback)
        self.scaler = scaler
        self.loss_fn = loss_fn
        self.locate = locate
        self.events: list[GuardEvent] = []
        self.steps = 0  # guard.step() calls
        self.good_steps = 0
        self.scaler_skips = 0  # steps the GradScaler skipped for overflow (not events)
        self._norms: deque[float] = deque(maxlen=history)  # good norms, on the host
        self._first_loss: float | None = None  # the first good step's loss (warm-up rule)
        self._params = [p for p in model.parameters()]
        self._named = [(n, p) for n, p in model.named_parameters()]
        self._located = False
        self.locate_error: str | None = None  # why locate_nonfinite failed, if it did
        self._monitor: Any = None
        self._snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self.snapshot_step: int | None = None  # good_steps when the snapshot was taken
        if self.rollback:
            self.take_snapshot()

    def attach(self, monitor: Any) -> None:
        """Record skipped steps in ``monitor`` too (called by ``gg.watch(..., guard=guard)``):
        each is a ``guard_skip`` (or, the scaler's overflow, ``scaler_skip``) event at its step,
        and the step keeps its number (``monitor.mark_skipped``)."""
        self._monitor = monitor

    def take_snapshot(self) -> None:
        """Deep-copy the model state and optimizer state (on their devices) as the rollback point."""
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._snapshot = (model_state, copy.deepcopy(self.optimizer.state_dict()))
        self.snapshot_step = self.good_steps

    def step(
        self,
        loss: torch.Tensor | float | None = None,
        *,
        inputs: Any = None,
        target: Any = None,
        batch: Any = None,
    ) -> bool:
        """Take the optimizer step if the gradients are sound; return False if it was skipped.

        Args:
            loss: this step's (unscaled) loss, checked for NaN/Inf.
            inputs: this step's model input, used to locate a NaN/Inf's origin.
            target: this step's target (passed to ``loss_fn`` when locating).
            batch: ``(inputs, target)`` in one tuple, instead of the two above.

        Returns:
            True if ``optimizer.step()`` ran (and the scaler did not skip it), else False.
        """
        if batch is not None:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise GradguardError(
                    "guard.step(batch=...) expects (inputs, target); pass inputs=... and target=... otherwise"
                )
            inputs, target = batch
        if loss is not None and not isinstance(loss, (torch.Tensor, int, float)):
            raise GradguardError(
                f"guard.step(loss=...) got {type(loss).__name__}; pass the loss tensor or a number"
            )
        found_inf = self._unscale()
        norm, loss_v, overflow = self._measure(loss, found_inf)
        idx = self.steps
        self.steps += 1
        if overflow:  # the scaler found inf/NaN: its own skip, not a guard event
            scale = float(self.scaler.get_scale())  # the scale that overflowed (a rare read)
            self.scaler.update()  # backs the scale off; the optimizer never sees these grads
            self.scaler_skips += 1
            self._tell_monitor(
                "scaler_skip",
                "GradScaler found inf/NaN gradients (fp16 overflow): the optimizer step was not "
                "taken and the loss scale backs off",
                data={"reason": "scaler_overflow", "scale": scale},
            )
            return False
        kind, z = self._judge(norm, loss_v)
        if kind is None:
            if self.scaler is None:
                self.optimizer.step()
            elif found_inf is not None:  # no overflow (read above): what scaler.step would do
                self.optimizer.step()
                self.scaler.update()
            else:  # a scaler whose overflow flag we cannot read: let it decide (its own sync)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self._norms.append(norm)
            if self._first_loss is None and loss_v is not None:
                self._first_loss = loss_v
            self.good_steps += 1
            if self.rollback and self.good_steps - (self.snapshot_step or 0) >= self.snapshot_every:
                self.take_snapshot()
            return True
        if self.scaler is not None:
            # flag not readable: a non-finite step whose scale goes down was the scaler's skip
            ask = found_inf is None and kind.startswith("nonfinite")
            before = float(self.scaler.get_scale()) if ask else 0.0
            self.scaler.update()  # no optimizer step: it must not see these gradients
            if ask and float(self.scaler.get_scale()) < before:
                self.scaler_skips += 1
                self._tell_monitor(
                    "scaler_skip",
                    "GradScaler found inf/NaN gradients (fp16 overflow): the optimizer step was "
                    "not taken and the loss scale backs off",
                    data={"reason": "scaler_overflow", "scale": before},
                )
                return False
        self._record(idx, kind, norm, z, loss_v, inputs, target)
        return False

    def _unscale(self) -> torch.Tensor | None:
        """Unscale through the scaler (unless done already); its overflow flag (0-d), if readable.

        ``GradScaler.unscale_`` records one ``found_inf`` tensor per device; we read it with the
        scaler's own ``_found_inf_per_device`` (the accessor its ``step`` uses), so that the flag
        joins our one host read. None when there is no scaler, it is disabled, or the flag
        cannot be read (then ``scaler.step`` decides, as usual).
        """
        if self.scaler is None:
            return None
        with contextlib.suppress(RuntimeError):  # raised if the user already unscaled
            self.scaler.unscale_(self.optimizer)
        enabled = getattr(self.scaler, "is_enabled", None)
        read = getattr(self.scaler, "_found_inf_per_device", None)
        if not callable(read) or (callable(enabled) and not enabled()):
            return None
        try:
            flags = list(read(self.optimizer).values())
        except Exception:  # an unexpected scaler: fall back to scaler.step
            return None
        if not flags or not all(isinstance(f, torch.Tensor) for f in flags):
            return None
        dev = flags[0].device
        return torch.stack([f.reshape(()).float().to(dev) for f in flags]).sum()

    def _measure(
        self, loss: torch.Tensor | float | None, found_inf: torch.Tensor | None
    ) -> tuple[float, float | None, bool]:
        """The gradient norm, the loss and the scaler's overflow flag, read in one host sync."""
        grads = [p.grad for p in self._params if p.grad is not None]
        norm = total_norm(grads)
        parts = [norm]
        if loss is not None:
            lt = loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
            parts.append(lt.detach().float().sum().to(norm.device))
        if found_inf is not None:
            parts.append(found_inf.to(norm.device))
        vals = torch.stack(parts).tolist()  # the one sync of this step
        n = vals[0]
        lv = vals[1] if loss is not None else None
        overflow = found_inf is not None and vals[-1] != 0.0
        return n, lv, overflow

    def _judge(self, norm: float, loss: float | None) -> tuple[str | None, float | None]:
        if loss is not None and not _finite(loss):
            return "nonfinite_loss", None
        if not _finite(norm):
            return "nonfinite_grad", None
        if self.max_norm_z is None:
            return None, None
        if len(self._norms) < max(self.warmup, 2):
            return self._judge_warmup(norm, loss), None
        hist = list(self._norms)
        med = statistics.median(hist)
        mad = statistics.median(abs(x - med) for x in hist)
        z = (norm - med) / max(1.4826 * mad, 0.01 * abs(med), 1e-12)
        return ("grad_spike", z) if z > self.max_norm_z else (None, z)

    def _judge_warmup(self, norm: float, loss: float | None) -> str | None:
        """The absolute rule of the warm-up: far above the largest good norm, or the first loss."""
        f = self.warmup_factor
        if f is None or not self._norms:
            return None
        if norm > f * max(self._norms):
            return "grad_spike"
        first = self._first_loss
        if loss is not None and first is not None and first > 0 and loss > f * first:
            return "loss_spike"
        return None

    def _first_bad_layer(self) -> str | None:
        for name, p in self._named:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return name.rsplit(".", 1)[0] if "." in name else "(root)"
        return None

    def _record(
        self,
        idx: int,
        kind: str,
        norm: float,
        z: float | None,
        loss: float | None,
        inputs: Any,
        target: Any,
    ) -> None:
        layer = self._first_bad_layer() if kind == "nonfinite_grad" else None
        where = None
        if (
            kind.startswith("nonfinite")
            and self.locate
            and not self._located
            and inputs is not None
        ):
            self._located = True
            try:
                where = locate_nonfinite(self.model, inputs, self.loss_fn, target)
            except GradguardError as e:  # never break the training loop over a diagnosis
                self.locate_error = str(e)
        msg = {
            "nonfinite_loss": f"loss is {loss}",
            "nonfinite_grad": f"gradient norm is {norm}" + (f", first in {layer}" if layer else ""),
            "grad_spike": f"gradient norm {norm:.4g} has robust z-score {z or 0:.1f} > {self.max_norm_z:g}",
            "loss_spike": f"loss {loss} is over {self.warmup_factor:g}x the first step's",
        }[kind]
        if kind == "grad_spike" and z is None:  # the warm-up's absolute rule decided
            msg = (
                f"gradient norm {norm:.4g} is over {self.warmup_factor:g}x the largest of the "
                f"first {len(self._norms)} good steps' (warm-up: absolute rule, no z-score yet)"
            )
        elif kind == "loss_spike":
            msg += " (warm-up: absolute rule)"
        rolled = self.rollback and self._snapshot is not None
        if rolled:
            self._roll_back()
        lr = self._back_off() if rolled or self.lr_backoff < 1.0 else None
        ev = GuardEvent(idx, kind, msg, norm, z, loss, layer, rolled, lr, where)
        self.events.append(ev)
        self._tell_monitor(
            "guard_skip",
            f"{kind}: {msg}",
            layer=layer,
            value=norm if _finite(norm) else None,
            data=ev.to_data(),
        )

    def _tell_monitor(self, kind: str, message: str, **fields: Any) -> None:
        """Record the skipped step in the attached Monitor (it keeps its step number there)."""
        if self._monitor is None:
            return
        try:
            self._monitor.mark_skipped(kind, message, **fields)
        except Exception as e:  # recording must never break the training it guards
            warnings.warn(
                f"gradguard: Guard could not record an event: {e}", RuntimeWarning, stacklevel=4
            )

    def _roll_back(self) -> None:
        """Restore the snapshot; each group keeps its current learning rate (not the snapshot's)."""
        assert self._snapshot is not None
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        model_state, opt_state = self._snapshot
        self.model.load_state_dict(model_state)
        # a deep copy: the optimizer updates its state in place, the snapshot must survive that
        self.optimizer.load_state_dict(copy.deepcopy(opt_state))
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr

    def _back_off(self) -> tuple[float, ...]:
        """Multiply each group's learning rate by ``lr_backoff``; return the new rates."""
        for g in self.optimizer.param_groups:
            g["lr"] = g["lr"] * self.lr_backoff
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
