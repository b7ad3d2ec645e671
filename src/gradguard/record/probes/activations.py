"""Activation statistics of a detail step: per layer, the mean, std, zero and saturated fractions of
its activation and the norm of the gradient flowing back into its output (the backpropagated signal).

Forward hooks (and a tensor hook per layer output) are installed only for the steps the
``detail_every`` schedule selects and removed right after. A layer's activation is the output of
the activation module that consumes its output when one was seen doing so (``Linear -> Tanh``),
else its own output.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gradguard.metrics import ACT_GRAD_NORM, ACT_MEAN, ACT_SAT_FRAC, ACT_STD, ACT_ZERO_FRAC
from gradguard.model.activations import activation_bounds, saturation_tolerance
from gradguard.model.layers import LayerInfo
from gradguard.model.tensors import first_tensor, local
from gradguard.record.buffer import StepBuffer
from gradguard.record.kernels import activation_sums, sumsq
from gradguard.record.reduce import Combine, Reducer
from gradguard.record.trace import FirstForwardTrace

__all__ = ["ActivationProbe"]

# Columns of an accumulator (one row per layer, summed over forward calls and micro-batches), and
# how each combines across ranks: every rank's own data is summed; the squared gradients of a
# rank's activations are divided by world**2 besides (gradients are averaged over ranks).
# _GRADN counts the gradients that reached the layer's output: an exactly zero backpropagated
# signal is a measurement (0), a layer no gradient reached is not (NaN).
_COUNT, _SUM, _SUMSQ, _ZEROS, _SAT, _SATN, _GRADSQ, _GRADN = range(8)
_HOW = (Combine.SUM,) * 6 + (Combine.MEAN_GRAD_SQ, Combine.SUM)


class ActivationProbe:
    """Accumulates activation moments during one detail step and writes them at its end.

    Args:
        layers: the watched layers.
        activations: the model's activation modules (the kinds gradguard knows).
        device: where the sums are kept.
        reducer: combines the sums across ranks.
        trace: the first-forward trace (which activation module consumes which layer's output).
        sample: on CPU, an output of at least 4x this many elements is summarised from a fixed
            random subset of its rows (all dimensions but the last) holding about this many
            elements; None: every element. The backpropagated signal is always exact.

    A failure inside a hook never breaks the forward pass: the hooks come off and :attr:`error`
    holds the exception for the Monitor to report.
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        activations: Sequence[nn.Module],
        device: torch.device,
        reducer: Reducer,
        trace: FirstForwardTrace,
        sample: int | None = None,
    ) -> None:
        self.layers = list(layers)
        self.sample = sample
        self._rows: dict[tuple[int, int], torch.Tensor] = {}  # (rows, kept) -> fixed row indices
        self.activations = list(activations)
        self.device = device
        self.reducer = reducer
        self.trace = trace
        self.error: BaseException | None = None
        self.seconds = 0.0  # time spent inside the hooks (the overhead budget reads and resets it)
        L = len(self.layers)
        self._own = torch.zeros(
            (L, len(_HOW)), dtype=torch.float64, device=device
        )  # the layer's output
        self._act = torch.zeros(
            (L, len(_HOW)), dtype=torch.float64, device=device
        )  # its activation's
        self._outputs: dict[int, tuple[int, torch.Tensor]] = {}  # id(output) -> (column, output)
        self._handles: list[Any] = []

    def arm(self) -> None:
        """Install the hooks for the coming forward/backward."""
        self._own.zero_()
        self._act.zero_()
        for lay in self.layers:
            self._handles.append(lay.module.register_forward_hook(self._layer_hook(lay.column)))
        for act in self.activations:
            self._handles.append(act.register_forward_hook(self._activation_hook(act)))

    def disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def new_forward(self) -> None:
        """A new forward pass began: outputs of the last one are not consumed by this one."""
        self._outputs.clear()

    def write(self, buffer: StepBuffer, slot: int) -> None:
        """Combine the sums (across ranks too) and write the step's statistics into ``slot``."""
        # per layer: the activation module's statistics where one consumed its output, else its own
        use_act = (self._act[:, _COUNT] > 0).unsqueeze(1)
        a = torch.where(use_act, self._act, self._own)
        a[:, _GRADSQ:] = self._own[:, _GRADSQ:]
        a = self.reducer.reduce(a.t().contiguous(), _HOW).t()
        n = a[:, _COUNT]
        seen = n > 0
        mean = a[:, _SUM] / n
        var = (a[:, _SUMSQ] / n - mean.square()).clamp_min(0.0)
        nan = torch.full_like(mean, math.nan)
        buffer.write(slot, ACT_MEAN, torch.where(seen, mean, nan))
        buffer.write(slot, ACT_STD, torch.where(seen, var.sqrt(), nan))
        buffer.write(slot, ACT_ZERO_FRAC, torch.where(seen, a[:, _ZEROS] / n, nan))
        buffer.write(
            slot, ACT_SAT_FRAC, torch.where(a[:, _SATN] > 0, a[:, _SAT] / a[:, _SATN], nan)
        )
        buffer.write(slot, ACT_GRAD_NORM, torch.where(a[:, _GRADN] > 0, a[:, _GRADSQ].sqrt(), nan))

    # ------------------------------------------------------------------ hooks
    def _failed(self, e: BaseException) -> None:
        self.error = e
        self.disarm()

    def _layer_hook(self, column: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = first_tensor(output)
            if out is None or not out.is_floating_point():
                return
            t0 = time.perf_counter()
            try:
                self._outputs[id(out)] = (column, out)
                # the layer's own output stands in for an activation until one is seen consuming it
                if not self.trace.done or column not in self.trace.activation_of:
                    self._accumulate(self._own, column, out.detach(), None)
                if out.requires_grad:
                    out.register_hook(self._grad_hook(column))
            except Exception as e:  # never break the forward pass
                self._failed(e)
            self.seconds += time.perf_counter() - t0

        return hook

    def _activation_hook(self, act: nn.Module) -> Callable[..., None]:
        bounds = activation_bounds(act)

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            inp, out = first_tensor(args), first_tensor(output)
            if inp is None or out is None or not out.is_floating_point():
                return
            hit = self._outputs.get(id(inp))
            if hit is None or hit[1] is not inp:
                return  # this call's input is not a watched layer's output
            t0 = time.perf_counter()
            try:
                self._accumulate(self._act, hit[0], out.detach(), bounds)
            except Exception as e:
                self._failed(e)
            self.seconds += time.perf_counter() - t0

        return hook

    def _grad_hook(self, column: int) -> Callable[[torch.Tensor], None]:
        def hook(g: torch.Tensor) -> None:
            t0 = time.perf_counter()
            try:
                own = self._own[column]
                own[_GRADSQ].add_(sumsq([local(g)])[0].to(self.device))
                own[_GRADN].add_(1.0)
            except Exception as e:
                self._failed(e)
            self.seconds += time.perf_counter() - t0

        return hook

    def _accumulate(
        self, acc: torch.Tensor, column: int, y: torch.Tensor, bounds: tuple[float, float] | None
    ) -> None:
        y = self._subset(local(y))
        n = y.numel()
        sums = activation_sums(y, saturation_tolerance(bounds) if bounds is not None else None)
        row = acc[column]
        row[_COUNT].add_(n)
        row[_SATN].add_(n if bounds is not None else 0)
        row[_SUM : _SAT + 1].add_(sums.to(self.device))

    def _subset(self, y: torch.Tensor) -> torch.Tensor:
        """``y``, or on CPU a fixed random subset of its rows holding about ``sample`` elements.

        Every statistic is a per-element mean or fraction, so a random subset of rows estimates it
        without bias; the rows are drawn once per shape (a seeded generator: the run's RNG is not
        touched) and kept, so steps compare like with like. Copying k rows costs k/rows of a pass.
        """
        if (
            self.sample is None
            or y.device.type != "cpu"
            or y.dim() < 2
            or y.numel() < 4 * self.sample
            or not y.is_contiguous()
        ):
            return y
        rows = y.reshape(-1, y.shape[-1])
        keep = -(-self.sample // rows.shape[1])  # ceil: at least ``sample`` elements
        if 4 * keep > rows.shape[0]:
            return y  # rows too long to gain from a subset
        key = (rows.shape[0], keep)
        idx = self._rows.get(key)
        if idx is None:
            gen = torch.Generator().manual_seed(0x6767 + rows.shape[0])
            idx = torch.randperm(rows.shape[0], generator=gen)[:keep].sort().values
            self._rows[key] = idx
        return rows.index_select(0, idx)
