"""TensorBoard sink: per-layer metrics, scalars, events and findings, written at each flush.

Layout (why): each per-layer value is a scalar tagged ``<metric>/<NN>_<layer>`` (``NN`` = position in
forward order, so tags sort by depth). The Scalars dashboard groups tags by their prefix: one section
per metric, a chart per layer. A custom-scalars layout is written too, with one multi-line chart per
metric holding a series per layer -- the picture that shows a gradient vanishing with depth at a
glance (Custom Scalars tab). The layout covers every metric seen so far: it is written again
(with the last step of the batch) whenever a flush brings a metric the last layout lacked, e.g.
``act_*`` or ``update_ratio`` first recorded at a later detail step; TensorBoard shows the latest
layout. A tag per (metric, layer) keeps one event file; ``add_scalars`` would open one file writer
per layer and metric.

Other tags: ``gradguard/<scalar>`` (loss, lr, grad_norm_total, anything ``mon.log`` got), text
``findings`` (online and end-of-run findings) and ``events``; with ``histograms_every=N``, histograms
``weights/<layer>`` and ``grads/<layer>`` of the watched model at most once per N steps (at a flush;
the local shard under FSDP2). Non-finite values are not written as points (TensorBoard cannot draw
them); the ``nonfinite/<layer>`` count records them.

>>> mon = gg.watch(model, opt, sinks=[TensorBoardSink("runs/tb")])   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gradguard.errors import GradguardError
from gradguard.model.layers import LayerInfo
from gradguard.model.tensors import local
from gradguard.record.batch import Batch, Event, Layer

__all__ = ["TensorBoardSink", "layer_tag"]

_UNSAFE = re.compile(r"[^-\w.]")


def layer_tag(metric: str, position: int, name: str) -> str:
    """The tag of one layer's value of ``metric``: ``grad_norm/03_encoder.fc1``.

    >>> layer_tag("grad_norm", 3, "encoder.fc1")
    'grad_norm/03_encoder.fc1'
    """
    return f"{metric}/{position:02d}_{_UNSAFE.sub('_', name)}"


class TensorBoardSink:
    """Writes what the Monitor flushes into TensorBoard event files under ``log_dir``.

    Args:
        log_dir: the directory of the event files (``tensorboard --logdir`` on it or a parent).
        histograms_every: write weight and gradient histograms per layer at most once per this many
            steps (None: never). They cost a host copy of every weight: keep it rare.

    >>> sink = TensorBoardSink("runs/tb", histograms_every=500)   # doctest: +SKIP
    """

    def __init__(
        self, log_dir: str | os.PathLike[str], histograms_every: int | None = None
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            raise GradguardError(
                "TensorBoardSink needs the tensorboard package; install it with "
                "`pip install gradguard[tensorboard]` (or `pip install tensorboard`)"
            ) from e
        if histograms_every is not None and (
            not isinstance(histograms_every, int) or histograms_every < 1
        ):
            raise GradguardError(
                f"histograms_every must be a whole number >= 1 or None, got {histograms_every!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.histograms_every = histograms_every
        self._writer: Any = None  # opened at the first write: non-writing ranks leave no files
        self._layout_metrics: set[str] = set()  # metrics the last written layout has a chart for
        self._last_hist: int | None = None
        self._watched: dict[str, LayerInfo] = {}  # layer name -> its module and parameters

    def bind(self, watched: Sequence[LayerInfo]) -> None:
        """Learn the watched layers: histograms read their weights and gradients."""
        self._watched = {lay.name: lay for lay in watched}

    @property
    def writer(self) -> Any:
        """The underlying ``torch.utils.tensorboard.SummaryWriter`` (opened on first use)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def write(self, batch: Batch, layers: Sequence[Layer]) -> None:
        """Write one flushed batch: per-layer metrics, scalars, events, maybe histograms."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        names = [layer_tag("", lay.index, lay.name)[1:] for lay in layers]  # "03_encoder.fc1"
        if not set(batch.metrics) <= self._layout_metrics:  # new metrics: rewrite the layout
            last = max((int(st.max()) for st, _ in batch.metrics.values() if st.size), default=0)
            self._write_layout(self._layout_metrics | set(batch.metrics), last)
        # One Summary per step with every value of that step: one event, not one per number.
        per_step: dict[int, list[Any]] = {}
        for metric, (steps, values) in batch.metrics.items():  # values: (steps, layers)
            for s, row in zip(steps.tolist(), values):
                vals = per_step.setdefault(s, [])
                for name, v in zip(names, row.tolist()):
                    if math.isfinite(v):
                        vals.append(Summary.Value(tag=f"{metric}/{name}", simple_value=v))
        for scalar, (steps, values) in batch.scalars.items():
            for s, v in zip(steps.tolist(), np.asarray(values, dtype=np.float64).tolist()):
                if math.isfinite(v):
                    per_step.setdefault(s, []).append(
                        Summary.Value(tag=f"gradguard/{scalar}", simple_value=v)
                    )
        file_writer = self._file_writer()
        for s in sorted(per_step):
            if per_step[s]:
                file_writer.add_summary(Summary(value=per_step[s]), global_step=s)
        for ev in batch.events:
            self._write_event(ev)
        if self.histograms_every and batch.metrics:
            last = max(int(steps.max()) for steps, _ in batch.metrics.values() if steps.size)
            self._maybe_histograms(last, layers)

    def _file_writer(self) -> Any:
        # SummaryWriter's public ``file_writer`` (set by its constructor, None once it was closed):
        # its add_summary writes all values of a step as one event, which add_scalar cannot.
        fw = self.writer.file_writer
        if fw is None:  # the SummaryWriter was closed behind the sink's back: open a new one
            self._writer = None
            fw = self.writer.file_writer
        return fw

    def _write_layout(self, metrics: set[str], step: int) -> None:
        from torch.utils.tensorboard.summary import custom_scalars

        charts = {m: ["Multiline", [rf"^{m}/"]] for m in sorted(metrics)}
        layout = {"gradguard: per layer (one series per layer)": charts}
        # the same summary SummaryWriter.add_custom_scalars writes, but with a step: the latest wins
        self._file_writer().add_summary(custom_scalars(layout), global_step=step)
        self._layout_metrics = set(metrics)

    def _write_event(self, ev: Event) -> None:
        where = f" [{ev.layer}]" if ev.layer else ""
        if ev.kind.startswith("finding:"):
            tag, text = "findings", ev.message
        else:
            tag, text = "events", f"{ev.kind}{where}: {ev.message}"
        step = ev.step if ev.step is not None else 0
        self.writer.add_text(tag, f"```\n{text}\n```", global_step=step)

    def _maybe_histograms(self, step: int, layers: Sequence[Layer]) -> None:
        every = self.histograms_every
        assert every is not None
        if self._last_hist is not None and step // every == self._last_hist // every:
            return
        if not self._watched:
            return
        self._last_hist = step
        for lay in layers:
            info = self._watched.get(lay.name)
            if info is None:
                continue
            tensors = [local(p.detach()) for _, p in info.params]
            grads = [local(p.grad) for _, p in info.params if p.grad is not None]
            self._histogram(f"weights/{lay.index:02d}_{_UNSAFE.sub('_', lay.name)}", tensors, step)
            self._histogram(f"grads/{lay.index:02d}_{_UNSAFE.sub('_', lay.name)}", grads, step)

    def _histogram(self, tag: str, tensors: list[torch.Tensor], step: int) -> None:
        flat = [t.reshape(-1).float().cpu() for t in tensors if t.numel()]
        if not flat:
            return
        values = torch.cat(flat)
        values = values[torch.isfinite(values)]
        if values.numel():
            self.writer.add_histogram(tag, values.numpy(), global_step=step)

    def flush(self) -> None:
        """Push buffered events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
