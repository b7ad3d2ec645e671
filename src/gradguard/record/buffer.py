"""The device buffer a flush reads once: per-layer metrics, the total gradient norm, logged values.

Probes write rows by metric name into a preallocated ``[slots, metrics, layers]`` tensor on the
model's device; nothing is read on the host until :meth:`StepBuffer.to_batch`, which makes one
device-to-host copy of the slots in use (plus one read per device for logged tensors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gradguard.metrics import GRAD_NORM_TOTAL, LAYER_METRICS, LR, Group, Metric
from gradguard.record.batch import Batch, Event

__all__ = ["StepBuffer", "to_host", "per_step_mean"]

_ROW = {m: i for i, m in enumerate(LAYER_METRICS)}


class StepBuffer:
    """``slots`` steps of per-layer metrics on ``device``, columns in registration order.

    Args:
        slots: steps held before a flush (``flush_every``).
        layers: number of watched layers.
        device: where the probes' numbers live.
    """

    def __init__(self, slots: int, layers: int, device: torch.device) -> None:
        f64: dict[str, Any] = {"dtype": torch.float64, "device": device}
        self.capacity = slots
        self._values = torch.full((slots, len(LAYER_METRICS), layers), math.nan, **f64)
        self._total = torch.full((slots,), math.nan, **f64)  # grad_norm_total per slot
        self._clear()

    def _clear(self) -> None:
        self.steps: list[int] = []  # the step each slot holds
        self._groups: list[set[Group]] = []  # which metric groups each slot holds
        self._lr: list[float | torch.Tensor] = []
        self._slot_of: dict[int, int] = {}
        self._logged: dict[str, list[tuple[int, float | torch.Tensor]]] = {}
        self._events: list[Event] = []

    @property
    def full(self) -> bool:
        return len(self.steps) >= self.capacity

    def slot(self, step: int) -> int:
        """The slot of ``step``, opened (filled with NaN) if new. The caller flushes when full."""
        got = self._slot_of.get(step)
        if got is not None:
            return got
        s = len(self.steps)
        self._values[s].fill_(math.nan)
        self._total[s].fill_(math.nan)
        self.steps.append(step)
        self._groups.append(set())
        self._lr.append(math.nan)
        self._slot_of[step] = s
        return s

    def slot_of(self, step: int) -> int | None:
        return self._slot_of.get(step)

    def discard(self, step: int) -> None:
        """Forget the per-layer rows written for ``step`` (a step that was skipped after all)."""
        if step in self._slot_of:
            self._groups[self._slot_of[step]].clear()

    def holds(self, slot: int, group: Group) -> bool:
        return group in self._groups[slot]

    def write(self, slot: int, metric: Metric, values: torch.Tensor) -> None:
        """Store ``values`` ``(layers,)`` of ``metric`` for ``slot`` (on the device, no sync)."""
        self._values[slot, _ROW[metric]] = values
        self._groups[slot].add(metric.group)

    def read(self, slot: int, metric: Metric) -> torch.Tensor:
        """The ``(layers,)`` device row of ``metric`` at ``slot`` (a view)."""
        return self._values[slot, _ROW[metric]]

    def write_total(self, slot: int, value: torch.Tensor | float) -> None:
        self._total[slot] = value

    def write_lr(self, slot: int, lr: float | torch.Tensor) -> None:
        # a tensor lr (capturable optimizers) is copied, not read: reading would be a device sync
        self._lr[slot] = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)

    def log(self, step: int, name: str, value: float | torch.Tensor) -> None:
        self._logged.setdefault(name, []).append((step, value))

    def add_event(self, event: Event) -> None:
        self._events.append(event)

    def to_batch(self, order: list[int], *, with_lr: bool) -> Batch:
        """Everything held, as a :class:`Batch` with layers in ``order``; the buffer is emptied.

        Args:
            order: registration indices of the layers in forward order (the stored column order).
            with_lr: whether slots carry a learning rate (an optimizer is watched).
        """
        try:
            return self._batch(order, with_lr)
        finally:  # whatever happened, the slots are free again: recording goes on
            self._clear()

    def _batch(self, order: list[int], with_lr: bool) -> Batch:
        batch = Batch()
        n = len(self.steps)
        if n:
            data = (
                self._values[:n].cpu().numpy()[:, :, order]
            )  # (slots, metrics, layers): the host read
            total = self._total[:n].cpu().numpy()
            steps = np.asarray(self.steps, dtype=np.int64)
            held = {
                g: np.array([g in gs for gs in self._groups])
                for g in ("grad", "weight", "update", "act")
            }
            for j, m in enumerate(LAYER_METRICS):
                mask = held[m.group]
                if mask.any():
                    batch.metrics[m] = (steps[mask], data[mask, j, :])
            if held["grad"].any():
                batch.scalars[GRAD_NORM_TOTAL] = (steps[held["grad"]], total[held["grad"]])
            if with_lr:  # tensor lrs (capturable optimizers): read here
                batch.scalars[LR] = (steps, np.asarray(to_host(self._lr)))
        # every value passed to log() since the last flush: one host read per device
        host = iter(to_host([v for vals in self._logged.values() for _, v in vals]))
        for k, vals in self._logged.items():
            if vals:
                batch.scalars[k] = per_step_mean(
                    np.asarray([st for st, _ in vals], dtype=np.int64),
                    np.asarray([next(host) for _ in vals]),
                )
        batch.events = list(self._events)
        return batch


def to_host(values: list[Any]) -> list[float]:
    """Numbers and 0-d tensors as floats; the tensors are stacked per device and read once, so a
    flush costs one sync per device, not one per value."""
    out = [math.nan if isinstance(v, torch.Tensor) else float(v) for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for idx in by_device.values():
        host = torch.stack([values[i].to(torch.float64) for i in idx]).cpu().tolist()
        for i, x in zip(idx, host):
            out[i] = x
    return out


def per_step_mean(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per step: values logged several times within one optimizer step (gradient
    accumulation: once per micro-batch) are averaged. Steps come out sorted."""
    uniq, inv = np.unique(steps, return_inverse=True)
    if len(uniq) == len(steps):
        order = np.argsort(steps, kind="stable")
        return steps[order], values[order].astype(np.float64)
    total = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(total, inv, values.astype(np.float64))
    return uniq, total / np.bincount(inv)
