"""The Monitor: watches a training loop and records per-layer gradient statistics.

How it stays cheap (see docs/design.md):
- Steps are counted by optimizer step hooks, so gradient accumulation gives one record per
  optimizer step. Gradient statistics are read in the step pre-hook, when every gradient is final
  (after DDP's all-reduce, after GradScaler's unscale).
- All per-layer numbers of a step come from a few batched kernels over all gradients at once
  (``torch._foreach_norm``), are reduced per layer with ``index_add_``/``scatter_reduce_`` and are
  written into a preallocated device buffer ``[flush_every, metrics, layers]``. The host reads that
  buffer only at flush: no ``.item()`` per step or per parameter.
- Activation statistics need forward and tensor hooks; those are installed only for the steps the
  ``detail_every`` schedule selects and removed right after.

>>> with gg.watch(model, optimizer, store="runs/exp.db") as mon:   # doctest: +SKIP
...     for x, y in loader:
...         loss = loss_fn(model(x), y)
...         optimizer.zero_grad(); loss.backward(); optimizer.step()
...         mon.log(loss=loss)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import platform
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.errors import GradguardError
from gradguard.model.activations import ACTIVATION_KINDS, activation_bounds, saturation_tolerance
from gradguard.model.layers import LayerInfo, discover_layers, forward_order
from gradguard.model.structure import has_skip_connection, residual_hint
from gradguard.model.tensors import first_tensor, local
from gradguard.record.batch import Batch, Event, Layer
from gradguard.record.config import WatchConfig, resolve_config
from gradguard.record.kernels import max_abs, sumsq
from gradguard.runs.run import Run
from gradguard.runs.store import Store, load
from gradguard.runs.writer import StoreWriter

__all__ = ["Monitor", "watch", "METRICS", "Reducer"]

log = logging.getLogger("gradguard")

# Per-layer metrics, in the row order of the device buffer.
METRICS = (
    "grad_norm",
    "grad_rms",
    "grad_max",
    "weight_norm",
    "nonfinite",
    "update_ratio",
    "act_mean",
    "act_std",
    "act_zero_frac",
    "act_sat_frac",
    "act_grad_norm",
)
_GRAD_ROWS = slice(0, 5)  # grad_norm .. nonfinite: every recorded step
_UPDATE_ROW = 5
_ACT_ROWS = slice(6, 11)  # act_mean .. act_grad_norm: detail steps only
_GRAD_METRICS = METRICS[_GRAD_ROWS]
_ACT_METRICS = METRICS[_ACT_ROWS]

# Columns of the activation accumulator (one row per layer, summed over forward calls and micro-batches).
_A_COUNT, _A_SUM, _A_SUMSQ, _A_ZEROS, _A_SAT, _A_SATN, _A_GRADSQ = range(7)


@dataclass
class Reducer:
    """Where per-layer numbers of a step are combined across processes (DDP/FSDP plug in here).

    ``reduce(sums, maxes)`` gets ``sums`` (float64 ``[k, L]``: squared norms, non-finite counts,
    activation sums) to be summed across ranks and ``maxes`` (float64 ``[m, L]``) to be maxed, and
    returns both reduced. The default does nothing (one process). ``kind`` says what the rows hold:
    "params" (statistics of parameters and their gradients, replicated or sharded across ranks) or
    "activations" (statistics of each rank's own data: always summed). :meth:`bind` is called once
    with the Monitor's layers (a distributed reducer reads from them how parameters are sharded).
    """

    def reduce(
        self, sums: torch.Tensor, maxes: torch.Tensor, *, kind: str = "params"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return sums, maxes

    def bind(self, layers: list[LayerInfo]) -> None:
        """Learn the layers being watched (nothing to learn for one process)."""

    @property
    def is_writer(self) -> bool:
        """Only this process writes the store (rank 0 under torch.distributed)."""
        return True


def _default_reducer() -> Reducer:
    """The torch.distributed reducer when a process group with several ranks is up, else the no-op."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from gradguard.record.reduce import DistributedReducer

        return DistributedReducer()
    return Reducer()


def _to_host(values: list[Any]) -> list[float]:
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


def _per_step_mean(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per step: values logged several times within one optimizer step (gradient
    accumulation: once per micro-batch) are averaged. Steps come out sorted."""
    uniq, inv = np.unique(steps, return_inverse=True)
    if len(uniq) == len(steps):
        order = np.argsort(steps, kind="stable")
        return steps[order], values[order].astype(np.float64)
    total = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(total, inv, values.astype(np.float64))
    return uniq, total / np.bincount(inv)


_Part = tuple[int | None, np.ndarray, np.ndarray]  # (store batch number, steps, values)


def _ends(parts: list[_Part], head: int, tail: int) -> tuple[int, int]:
    """``(first, last)``: parts ``[:first]`` hold the first ``head`` rows (at least), parts
    ``[last:]`` the last ``tail`` rows, ``first <= last``."""
    first, n = 0, 0
    while first < len(parts) and n < head:
        n += len(parts[first][1])
        first += 1
    last, n = len(parts), 0
    while last > first and n < tail:
        last -= 1
        n += len(parts[last][1])
    return first, last


def _merge(
    stored: Mapping[str, tuple[np.ndarray, np.ndarray]],
    memory: Mapping[str, list[_Part]],
    committed: int,
) -> dict[str, list[_Part]]:
    """Series made of the store's committed rows and memory's parts the store does not hold."""
    out: dict[str, list[_Part]] = {k: [(None, s, v)] for k, (s, v) in stored.items()}
    for k, parts in memory.items():
        out.setdefault(k, []).extend(p for p in parts if p[0] is None or p[0] >= committed)
    for k, parts in out.items():  # in step order
        steps = np.concatenate([p[1] for p in parts])
        order = np.argsort(steps, kind="stable")
        out[k] = [(None, steps[order], np.concatenate([p[2] for p in parts])[order])]
    return out


_OWN_DIRS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)


def _user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called right here that points at the user's code: the
    first frame outside gradguard and torch (a finding fires inside ``optimizer.step()``'s hooks,
    whose depth varies), so the warning names the line of the training loop."""
    frame = sys._getframe(1)  # the function that is about to warn
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_DIRS):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _environment(device: torch.device) -> dict[str, Any]:
    from gradguard import __version__

    env: dict[str, Any] = {
        "gradguard": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "pid": os.getpid(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        env["world_size"] = torch.distributed.get_world_size()
        env["rank"] = torch.distributed.get_rank()
    return env


class Monitor:
    """Records per-layer gradient, weight, update and activation statistics of a training run.

    Create it with :func:`watch`. Use as a context manager or call :meth:`close`.

    Attributes:
        layers: the watched layers (:class:`~gradguard.model.layers.LayerInfo`), registration order.
        step_count: optimizer steps counted so far.
        run_name: the run's name in the store.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        store: str | os.PathLike[str] | Store | None = None,
        name: str | None = None,
        config: WatchConfig | str | None = None,
        clip: Any = None,
        guard: Any = None,
        on_finding: Callable[[Any], None] | None = None,
        reducer: Reducer | None = None,
        run_config: Mapping[str, Any] | None = None,
        sinks: list[Any] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise GradguardError(
                f"gg.watch expects a torch.nn.Module as its first argument, got {type(model).__name__}; "
                "pass the model (e.g. gg.watch(model, optimizer))"
            )
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise GradguardError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}; pass the optimizer "
                "object (e.g. torch.optim.SGD(model.parameters(), lr=0.1)), or None and call mon.step() yourself"
            )
        self.config = resolve_config(config, **options)
        self.model = model
        self.optimizer = optimizer
        self.layers: list[LayerInfo] = discover_layers(model)
        # torch.distributed up with several ranks: numbers are combined across ranks (gradguard.record.reduce)
        self.reducer = reducer or _default_reducer()
        self.reducer.bind(self.layers)
        self.sinks = list(sinks or [])  # each has write(batch, layers) and close(); fed at flush
        self.on_finding = on_finding
        self.step_count = 0
        self._closed = False
        self._failed: set[str] = set()
        self._handles: list[Any] = []  # removable hooks owned by this monitor
        self._act_handles: list[Any] = []  # hooks for the current detail step only

        L = len(self.layers)
        first = next(p for lay in self.layers for _, p in lay.params)
        self.device = local(first).device
        self._order: list[int] | None = None  # forward order (registration indices), once seen
        self._activation_of: dict[
            int, nn.Module
        ] = {}  # layer index -> activation module that follows it

        # Parameters: every owned parameter, with its layer; the trainable ones get gradient statistics.
        self._params: list[tuple[int, nn.Parameter]] = [
            (lay.index, p) for lay in self.layers for _, p in lay.params
        ]
        self._pidx = torch.tensor(
            [i for i, _ in self._params], dtype=torch.long, device=self.device
        )
        self._tparams: list[tuple[int, nn.Parameter]] = [
            (i, p) for i, p in self._params if p.requires_grad
        ]
        self._sig_cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        # Device buffers, allocated once: per-layer metrics and built-in scalars for flush_every steps.
        K = self.config.flush_every
        f64: dict[str, Any] = {"dtype": torch.float64, "device": self.device}
        self._buf = torch.full((K, len(METRICS), L), math.nan, **f64)  # (slots, metrics, layers)
        self._gtotal = torch.full((K,), math.nan, **f64)  # grad_norm_total per slot
        # Activation accumulators of the current detail step, (layers, 7) each: statistics of the layer's
        # own output, and of the activation module that consumes it (used when seen).
        self._act = torch.zeros((L, 7), **f64)
        self._actv = torch.zeros((L, 7), **f64)
        self._outputs: dict[
            int, tuple[int, torch.Tensor]
        ] = {}  # id(layer output) -> (layer, output)
        self._act_modules = [m for m in model.modules() if type(m).__name__ in ACTIVATION_KINDS]
        self._slot_steps: list[int] = []
        self._slot_groups: list[set[str]] = []  # which metric groups each slot holds
        self._slot_lr: list[float | torch.Tensor] = []
        self._slot_of_step: dict[int, int] = {}
        self._before: list[torch.Tensor] | None = None  # weights before the step (update_ratio)
        self._before_step: int | None = None
        self._act_step: int | None = None
        self._just_stepped = False
        self._taken_early: int | None = None  # step whose statistics take_gradients_now() took
        self._scalars: dict[str, list[tuple[int, Any]]] = {}
        self._events: list[Event] = []
        self._findings_seen: dict[tuple[str, str], Any] = {}  # online key -> severity reported
        # Flushed history, one part per flush: (batch number in the store or None, steps, values).
        # With a healthy store only what online diagnosis reads and what is not committed yet stays
        # here (see _prune): memory does not grow with the run.
        self._mem_metrics: dict[str, list[_Part]] = {}
        self._mem_scalars: dict[str, list[_Part]] = {}
        self._mem_events: list[Event] = []
        self._submitted = 0  # batches handed to the store writer
        self._pruned = False  # parts dropped from memory (then mon.run reads the store)
        self._layers_written = False

        # Store: opened here so that a bad path fails now, not at the first flush.
        self._store: Store | None = None
        self._writer: StoreWriter | None = None
        self.run_name = name or "run"
        self.store_path: Path | None = None
        # The run's config, built once: stored with the run and carried by the in-memory mon.run.
        cfg = {"watch": self.config.to_dict(), **dict(run_config or {})}
        if optimizer is not None:
            cfg["optimizer"] = type(optimizer).__name__
        cfg["model"] = type(model).__name__
        self._residual_from_user = "residual" in cfg
        self._config_changed = False  # the config learned something after it was stored
        if "residual" not in cfg:  # the user's run_config={"residual": ...} wins
            hint = residual_hint(model)  # class names only, see docs/diagnosis.md
            cfg["residual"] = hint is not None
            if hint is not None:
                cfg["residual_module"] = hint
        self._run_config: dict[str, Any] = cfg
        if store is not None and self.reducer.is_writer:
            self._store = store if isinstance(store, Store) else Store(store)
            self.store_path = self._store.path
            self._run_id, self.run_name = self._store.create_run(
                name, cfg, _environment(self.device)
            )
            self._writer = StoreWriter(self._store, self._run_id)

        self._install_hooks()
        for helper in (clip, guard):
            if helper is not None:
                attach = getattr(helper, "attach", None)
                if not callable(attach):
                    raise GradguardError(
                        f"{type(helper).__name__} cannot be attached to a Monitor (no attach method); "
                        "pass a gg.clip clipper as clip= and a gg.Guard as guard="
                    )
                attach(self)
        self.clip = clip
        self.guard = guard
        for sink in self.sinks:
            attach = getattr(sink, "attach", None)
            if callable(attach):
                attach(self)
        _LIVE.add(self)

    # ------------------------------------------------------------------ hooks
    def _install_hooks(self) -> None:
        # One cheap hook on the root module: marks "a new forward began" (log() step attribution).
        self._handles.append(self.model.register_forward_pre_hook(self._on_root_forward))
        # Until the first forward pass: learn the forward order of layers and their activations.
        self._trace_handles: list[Any] = []
        self._trace_outputs: dict[int, int] = {}  # id(output tensor) -> layer index
        self._trace_keep: list[torch.Tensor] = []
        self._seen_order: list[int] = []
        layer_of = {id(lay.module): lay.index for lay in self.layers}
        for module in self.model.modules():
            if id(module) in layer_of:
                idx = layer_of[id(module)]
                self._trace_handles.append(module.register_forward_pre_hook(self._trace_pre(idx)))
                self._trace_handles.append(module.register_forward_hook(self._trace_post(idx)))
            elif type(module).__name__ in ACTIVATION_KINDS:
                self._trace_handles.append(module.register_forward_hook(self._trace_act(module)))
        self._trace_handles.append(self.model.register_forward_hook(self._trace_done))
        self._handles.extend(self._trace_handles)
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._on_pre_step))
            self._handles.append(self.optimizer.register_step_post_hook(self._on_post_step))
        self._prepare_step(0)

    def _trace_pre(self, idx: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if idx not in self._seen_order:
                self._seen_order.append(idx)

        return hook

    def _trace_post(self, idx: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = first_tensor(output)
            if out is not None:
                self._trace_outputs[id(out)] = idx
                self._trace_keep.append(out)

        return hook

    def _trace_act(self, act: nn.Module) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            inp = first_tensor(args)
            if inp is not None and id(inp) in self._trace_outputs:
                self._activation_of.setdefault(self._trace_outputs[id(inp)], act)

        return hook

    def _trace_done(self, module: nn.Module, args: Any, output: Any) -> None:
        self._order = forward_order(self.layers, list(self._seen_order))
        if not self._run_config.get("residual") and not self._residual_from_user:
            self._guarded("structure", lambda: self._look_for_skips(output))
        for h in self._trace_handles:
            h.remove()
        self._trace_handles.clear()
        self._trace_outputs.clear()
        self._trace_keep.clear()

    def _look_for_skips(self, output: Any) -> None:
        """Skip connections seen in the first forward's autograd graph go into the run's config
        (the remedies then do not suggest adding them); stored with the next flush."""
        if has_skip_connection(first_tensor(output)):
            self._run_config["residual"] = True
            self._run_config["residual_module"] = "autograd graph (h + f(h))"
            self._config_changed = True

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        self._just_stepped = False
        self._outputs.clear()

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._taken_early == self.step_count:  # taken before the trainer's clip already
            self._taken_early = None
            return
        self._guarded("gradient statistics", self._pre_step)

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
        self._guarded("gradient statistics", self._pre_step)
        self._taken_early = self.step_count

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._guarded("update ratio", self._post_step)

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
        self._guarded("gradient statistics", self._pre_step)
        self._guarded("update ratio", self._post_step)

    def _pre_step(self) -> None:
        s = self.step_count
        if self._act_step == s:
            self._remove_act_hooks()
        slot = self._slot(s) if (self._records(s) or self._details(s)) else None
        if slot is None:
            return
        if self._records(s):
            self._grad_stats(slot)
        if self._act_step == s:
            self._fold_activations(slot)
            self._act_step = None
        if self.optimizer is not None:
            lr = self.optimizer.param_groups[0].get("lr", math.nan)
            # a tensor lr (capturable optimizers) is copied, not read: reading would be a device sync
            self._slot_lr[slot] = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)
            if self._before_step == s:  # snapshot now: the weights right before the real update
                self._snapshot()

    def _post_step(self) -> None:
        s = self.step_count
        if self._before_step == s and self._before is not None and s in self._slot_of_step:
            self._update_ratio(self._slot_of_step[s])
            self._before_step = None
        self.step_count = s + 1
        self._just_stepped = True
        if len(self._slot_steps) >= self.config.flush_every:
            self.flush(wait=False)  # automatic: the commit happens on the writer thread
        self._prepare_step(self.step_count)

    def _prepare_step(self, s: int) -> None:
        """Arm the detail probes for step ``s`` if the schedule selects it."""
        if self._closed or not self._details(s):
            return
        if self.config.update_ratio and "update ratio" not in self._failed:
            self._before_step = s
            if self.optimizer is None:  # manual loop: the weights now are the weights before step s
                self._snapshot()
        if self.config.activations and "activations" not in self._failed:
            self._act_step = s
            self._install_act_hooks()

    def _records(self, s: int) -> bool:
        return bool(self.config.record_every(s))

    def _details(self, s: int) -> bool:
        return bool(self.config.detail_every(s)) and (
            self.config.activations or self.config.update_ratio
        )

    def _slot(self, s: int) -> int:
        if s in self._slot_of_step:
            return self._slot_of_step[s]
        if len(self._slot_steps) >= self.config.flush_every:
            self.flush(wait=False)  # automatic: the commit happens on the writer thread
        slot = len(self._slot_steps)
        self._buf[slot].fill_(math.nan)
        self._gtotal[slot].fill_(math.nan)
        self._slot_steps.append(s)
        self._slot_groups.append(set())
        self._slot_lr.append(math.nan)
        self._slot_of_step[s] = slot
        return slot

    # ------------------------------------------------------------------ probes
    def _signature(
        self, present: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached per-gradient layer index, per-layer 1/sqrt(numel) and 'has grad' mask for a set of grads."""
        got = self._sig_cache.get(present)
        if got is None:
            L = len(self.layers)
            numel = [0] * L
            lidx = []
            for i in present:
                li, p = self._tparams[i]
                numel[li] += p.numel()
                lidx.append(li)
            inv = torch.tensor(
                [1.0 / math.sqrt(n) if n else math.nan for n in numel],
                dtype=torch.float64,
                device=self.device,
            )
            has = torch.tensor([n > 0 for n in numel], device=self.device)
            got = (torch.tensor(lidx, dtype=torch.long, device=self.device), inv, has)
            if len(self._sig_cache) < 64:
                self._sig_cache[present] = got
        return got

    def _grad_stats(self, slot: int) -> None:
        L = len(self.layers)
        present: list[int] = []
        grads: list[torch.Tensor] = []
        for i, (_, p) in enumerate(self._tparams):
            if p.grad is not None:
                present.append(i)
                grads.append(local(p.grad))
        weights = [local(p.detach()) for _, p in self._params]
        # (P,) norms of every weight; one batched kernel per norm kind.
        wsq = sumsq(weights)
        sums = torch.zeros((2, L), dtype=torch.float64, device=self.device)  # grad, weight sumsq
        sums[1].index_add_(0, self._pidx, wsq)
        # maxima: max |g|, and the count of non-finite tensors (maxed over ranks, not summed: the
        # same tensor non-finite on several ranks -- DDP copies, FSDP2 shards -- is one tensor)
        maxes = torch.full((2, L), -math.inf, dtype=torch.float64, device=self.device)
        nonfinite = torch.zeros(L, dtype=torch.float64, device=self.device)
        if grads:
            lidx, inv, has = self._signature(tuple(present))
            gsq = sumsq(grads)
            # a NaN anywhere makes the sum of squares NaN: make max |g| say so too, whatever the
            # max kernel does with NaN on this device
            gmax = torch.where(gsq.isnan(), math.nan, max_abs(grads))
            sums[0].index_add_(0, lidx, gsq)
            nonfinite.index_add_(0, lidx, (~torch.isfinite(gmax)).to(torch.float64))
            maxes[0].scatter_reduce_(0, lidx, gmax, reduce="amax")
        else:
            inv = torch.full((L,), math.nan, dtype=torch.float64, device=self.device)
            has = torch.zeros(L, dtype=torch.bool, device=self.device)
        maxes[1] = nonfinite.index_add_(0, self._pidx, (~torch.isfinite(wsq)).to(torch.float64))
        sums, maxes = self.reducer.reduce(sums, maxes)  # the one place where ranks are combined
        gnorm = torch.where(has, sums[0].sqrt(), math.nan)
        row = self._buf[slot]
        row[0] = gnorm
        row[1] = gnorm * inv
        row[2] = torch.where(has, maxes[0], math.nan)
        row[3] = sums[1].sqrt()
        row[4] = maxes[1]
        self._gtotal[slot] = torch.where(has, sums[0], 0.0).sum().sqrt() if grads else math.nan
        self._slot_groups[slot].add("grad")

    def _snapshot(self) -> None:
        weights = [local(p.detach()) for _, p in self._params]
        if self._before is None:
            self._before = [w.clone() for w in weights]
        else:
            torch._foreach_copy_(self._before, weights)

    def _update_ratio(self, slot: int) -> None:
        assert self._before is not None
        weights = [local(p.detach()) for _, p in self._params]
        L = len(self.layers)
        # ||w_before|| is this step's weight_norm when the optimizer's pre-hook took it (the same
        # weights the snapshot holds): one pass over the weights fewer
        reuse = self.optimizer is not None and "grad" in self._slot_groups[slot]
        before_sq = None if reuse else sumsq(self._before)
        torch._foreach_sub_(self._before, weights)  # in place: before <- before - after
        diff_sq = sumsq(self._before)
        sums = torch.zeros((1 if reuse else 2, L), dtype=torch.float64, device=self.device)
        sums[0].index_add_(0, self._pidx, diff_sq)
        if before_sq is not None:
            sums[1].index_add_(0, self._pidx, before_sq)
        sums, _ = self.reducer.reduce(
            sums, torch.zeros((0, L), dtype=torch.float64, device=self.device)
        )
        before = self._buf[slot, 3] if reuse else sums[1].sqrt()
        self._buf[slot, _UPDATE_ROW] = sums[0].sqrt() / before
        self._slot_groups[slot].add("update")

    def _install_act_hooks(self) -> None:
        self._act.zero_()
        self._actv.zero_()
        for lay in self.layers:
            self._act_handles.append(lay.module.register_forward_hook(self._layer_hook(lay.index)))
        for act in self._act_modules:
            self._act_handles.append(act.register_forward_hook(self._activation_hook(act)))

    def _remove_act_hooks(self) -> None:
        for h in self._act_handles:
            h.remove()
        self._act_handles.clear()
        self._outputs.clear()

    def _layer_hook(self, idx: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = first_tensor(output)
            if out is None or not out.is_floating_point():
                return
            try:
                self._outputs[id(out)] = (idx, out)
                # The layer's own output stands in for an activation until one is seen consuming it.
                if self._order is None or idx not in self._activation_of:
                    self._accumulate(self._act, idx, out.detach(), None)
                if out.requires_grad:
                    out.register_hook(self._grad_hook(idx))
            except Exception as e:  # never break the forward pass
                self._fail("activations", e)

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
            try:
                self._accumulate(self._actv, hit[0], out.detach(), bounds)
            except Exception as e:
                self._fail("activations", e)

        return hook

    def _accumulate(
        self, acc: torch.Tensor, idx: int, y: torch.Tensor, bounds: tuple[float, float] | None
    ) -> None:
        # Moments from sums and sums of squares: std_mean is 12-35x slower on CPU (PERF-NOTES).
        # Each statistic is one pass over y; no host read, no host-to-device copy.
        y = local(y)
        n = y.numel()
        # fp32 sums are cascaded (relative error ~1e-7 of the sum of |y|); sum(dtype=float64)
        # converts a copy of y first on CPU, which costs more than every other statistic together
        s1 = (y.sum() if y.dtype == torch.float32 else y.sum(dtype=torch.float64)).to(torch.float64)
        s2 = sumsq([y])[0]
        if bounds is not None:
            # tanh/sigmoid-like outputs are almost never 0: count_nonzero is one fast pass there
            zeros = n - torch.count_nonzero(y).to(torch.float64)
            lo, hi = saturation_tolerance(bounds)
            # within tolerance of either bound: |y - middle| >= half the tolerated width
            mid, half = (lo + hi) / 2, (hi - lo) / 2
            dist = y.abs() if mid == 0 else (y - mid).abs_()
            sat = torch.count_nonzero(dist >= half).to(torch.float64)
        else:
            # nonzeros as a sum of |sign(y)|: count_nonzero branches on every element on CPU
            # (7x slower on a ReLU output that is half zeros)
            zeros = n - y.sign().abs_().sum(dtype=torch.float64)
            sat = s1.new_zeros(())
        row = acc[idx]
        row[_A_COUNT].add_(n)
        row[_A_SATN].add_(n if bounds is not None else 0)
        row[_A_SUM : _A_SAT + 1].add_(torch.stack([s1, s2, zeros, sat]).to(self.device))

    def _grad_hook(self, idx: int) -> Callable[[torch.Tensor], None]:
        def hook(g: torch.Tensor) -> None:
            try:
                self._act[idx, _A_GRADSQ].add_(sumsq([local(g)])[0].to(self.device))
            except Exception as e:
                self._fail("activations", e)

        return hook

    def _fold_activations(self, slot: int) -> None:
        # Per layer: the activation module's statistics where one consumed its output, else its own.
        use_v = (self._actv[:, _A_COUNT] > 0).unsqueeze(1)
        a = torch.where(use_v, self._actv, self._act)
        a[:, _A_GRADSQ] = self._act[:, _A_GRADSQ]
        empty = torch.zeros((0, a.shape[0]), dtype=torch.float64, device=self.device)
        sums, _ = self.reducer.reduce(a.t().contiguous(), empty, kind="activations")
        a = sums.t()
        n = a[:, _A_COUNT]
        seen = n > 0
        mean = a[:, _A_SUM] / n
        var = (a[:, _A_SUMSQ] / n - mean.square()).clamp_min(0.0)
        nan = torch.full_like(mean, math.nan)
        row = self._buf[slot]
        row[6] = torch.where(seen, mean, nan)
        row[7] = torch.where(seen, var.sqrt(), nan)
        row[8] = torch.where(seen, a[:, _A_ZEROS] / n, nan)
        row[9] = torch.where(a[:, _A_SATN] > 0, a[:, _A_SAT] / a[:, _A_SATN], nan)
        row[10] = torch.where(a[:, _A_GRADSQ] > 0, a[:, _A_GRADSQ].sqrt(), nan)
        self._slot_groups[slot].add("act")

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
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise GradguardError(
                        f"mon.log({k}=...) got a tensor of shape {tuple(v.shape)}; log scalars only "
                        "(e.g. loss.mean() or a 0-d tensor)"
                    )
                v = v.detach().reshape(())
            elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                v = float(v)
            else:
                raise GradguardError(
                    f"mon.log({k}=...) got {type(v).__name__}; pass a number or a 0-d tensor"
                )
            self._scalars.setdefault(k, []).append((max(step, 0), v))

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
            step=step,
            kind=kind,
            layer=layer,
            value=value,
            message=message,
            data=dict(data or {}),
        )
        self._events.append(ev)

    @property
    def layer_order(self) -> list[int]:
        """Registration indices of the layers in forward order (registration order until the first forward)."""
        return self._order if self._order is not None else [lay.index for lay in self.layers]

    def recorded_layers(self) -> list[Layer]:
        """The layer table as stored: forward order, with the activation that follows each layer."""
        out = []
        for pos, i in enumerate(self.layer_order):
            lay = self.layers[i]
            act = self._activation_of.get(i)
            out.append(
                Layer(
                    pos,
                    lay.name,
                    lay.kind,
                    lay.numel,
                    lay.trainable,
                    type(act).__name__ if act is not None else None,
                )
            )
        return out

    def flush(self, *, wait: bool = True) -> None:
        """Read the device buffer once and hand everything recorded so far to the store.

        With ``wait=True`` (the default) it returns once the batch is committed: what was flushed
        survives a kill -9 of this process. Automatic flushes (every ``flush_every`` steps) don't wait.
        """
        if self._closed:
            return
        try:
            self._flush(wait)
        except Exception as e:
            self._fail("flush", e)
        finally:  # whatever happened, the buffer slots are free again: recording goes on
            self._slot_steps, self._slot_groups, self._slot_lr, self._slot_of_step = [], [], [], {}

    def _flush(self, wait: bool) -> None:
        n = len(self._slot_steps)
        order = self.layer_order
        batch = Batch()
        if n:
            data = (
                self._buf[:n].cpu().numpy()[:, :, order]
            )  # (slots, metrics, layers) -- the one host read
            gtotal = self._gtotal[:n].cpu().numpy()
            steps = np.asarray(self._slot_steps, dtype=np.int64)
            groups = {
                "grad": np.array(["grad" in g for g in self._slot_groups]),
                "update": np.array(["update" in g for g in self._slot_groups]),
                "act": np.array(["act" in g for g in self._slot_groups]),
            }
            for j, m in enumerate(METRICS):
                g = "grad" if j < 5 else ("update" if j == _UPDATE_ROW else "act")
                mask = groups[g]
                if mask.any():
                    batch.metrics[m] = (steps[mask], data[mask, j, :])
            if groups["grad"].any():
                batch.scalars["grad_norm_total"] = (steps[groups["grad"]], gtotal[groups["grad"]])
            if self.optimizer is not None:  # tensor lrs (capturable optimizers): read here
                batch.scalars["lr"] = (steps, np.asarray(_to_host(self._slot_lr)))
        # every value passed to log() since the last flush: one host read per device
        host = iter(_to_host([v for vals in self._scalars.values() for _, v in vals]))
        for k, vals in self._scalars.items():
            if vals:
                batch.scalars[k] = _per_step_mean(
                    np.asarray([st for st, _ in vals], dtype=np.int64),
                    np.asarray([next(host) for _ in vals]),
                )
        batch.events = list(self._events)
        if not self._layers_written and (
            self._order is not None or n or batch.scalars or batch.events
        ):
            batch.layers = self.recorded_layers()
            self._layers_written = self._order is not None
        # Reset before handing over, so a failing store cannot make us record twice.
        self._slot_steps, self._slot_groups, self._slot_lr, self._slot_of_step = [], [], [], {}
        self._scalars = {}
        self._events = []
        if self._config_changed:
            batch.config, self._config_changed = dict(self._run_config), False
        to_store = self._writer is not None and bool(
            batch.metrics or batch.scalars or batch.events or batch.layers or batch.config
        )
        self._remember(batch, self._submitted if to_store else None)
        self._to_sinks(batch)
        # A failed writer has reported itself once (logging + warnings) and drops batches; what it
        # did not commit stays in memory (mon.run stays complete).
        if to_store:
            self._submit(batch, wait)
        if self.config.diagnose_online and "diagnosis" not in self._failed:
            self._guarded("diagnosis", self._diagnose_online)

    def _to_sinks(self, batch: Batch) -> None:
        """Hand a flushed batch to every sink (writer rank only); a failing sink is reported once and dropped."""
        if not self.sinks or not self.reducer.is_writer:
            return
        layers = self.recorded_layers()
        for i, sink in enumerate(self.sinks):
            part = f"sink {i} ({type(sink).__name__})"
            if part not in self._failed:
                try:
                    sink.write(batch, layers)
                except Exception as e:
                    self._fail(part, e)

    def _close_sinks(self) -> None:
        for i, sink in enumerate(self.sinks):
            try:
                sink.close()
            except Exception as e:
                self._fail(f"sink {i} ({type(sink).__name__}) close", e)

    def _submit(self, batch: Batch, wait: bool = False) -> None:
        assert self._writer is not None
        self._submitted += 1
        self._writer.submit(batch, wait=wait)

    def _remember(self, batch: Batch, seq: int | None) -> None:
        for k, (s, v) in batch.metrics.items():
            self._mem_metrics.setdefault(k, []).append((seq, s, v))
        for k, (s, v) in batch.scalars.items():
            self._mem_scalars.setdefault(k, []).append((seq, s, v))
        self._mem_events.extend(batch.events)
        self._prune()

    def _prune(self) -> None:
        """Drop from memory the flushed parts the store has committed, but for the first and last
        parts of each series that online diagnosis reads (``_tail_run``): with a healthy store the
        Monitor's memory stays bounded however long the run. Nothing uncommitted is dropped, so a
        store that fails later loses nothing (``mon.run`` = the store's part + memory's)."""
        w = self._writer
        if w is None or w.failed is not None:
            return
        committed = w.committed
        dcfg = self._diagnosis_config() if self.config.diagnose_online else None
        head, tail = (dcfg.start_steps, dcfg.online_window) if dcfg is not None else (0, 0)
        for series in (self._mem_metrics, self._mem_scalars):
            for k, parts in series.items():
                first, last = _ends(parts, head, tail)
                kept = [
                    p
                    for i, p in enumerate(parts)
                    if i < first or i >= last or p[0] is None or p[0] >= committed
                ]
                if len(kept) < len(parts):
                    series[k] = kept
                    self._pruned = True

    def _diagnosis_config(self) -> Any:
        """The thresholds of online diagnosis (its window also bounds what memory keeps)."""
        from gradguard.diagnosis.config import DiagnosisConfig

        return self.config.diagnosis or DiagnosisConfig()

    @property
    def run(self) -> Run:
        """Everything flushed so far, as a :class:`~gradguard.runs.store.Run`.

        Without a store (or while memory holds all of it) it is built from memory; once older
        parts live only in the store, the store's committed part is read back and what is not
        committed yet is added from memory.
        """
        metrics = self._mem_metrics
        scalars = self._mem_scalars
        if self._pruned and self._writer is not None and self.store_path is not None:
            self._writer.sync()
            committed = self._writer.committed
            try:
                stored: Run | None = load(self.store_path, run_id=self._run_id)
            except Exception as e:  # the store broke after committing: say so, return memory's part
                log.error("gradguard: could not read the run back from its store (%s)", e)
                warnings.warn(
                    f"gradguard: mon.run could not read {str(self.store_path)!r} ({e}); it holds "
                    "only the steps still in memory",
                    RuntimeWarning,
                    stacklevel=2,
                )
                stored = None
            if stored is not None:
                metrics = _merge(
                    {m: stored.metric(m) for m in stored.metric_names}, self._mem_metrics, committed
                )
                scalars = _merge(
                    {n: stored.scalar(n) for n in stored.scalar_names}, self._mem_scalars, committed
                )

        def cat(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
            return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

        return Run(
            self.run_name,
            self.recorded_layers(),
            {k: cat(v) for k, v in metrics.items() if v},
            {k: cat(v) for k, v in scalars.items() if v},
            list(self._mem_events),
            dict(self._run_config),
            path=self.store_path,
        )

    def _tail_run(self, head: int, tail: int) -> Run:
        """The run so far with each series cut to (about) its first ``head`` and last ``tail``
        rows: only the flushed parts that hold them are concatenated, so the cost is
        O(head + tail + flush_every), not O(run length). Events are left out (no rule reads them).
        """

        def cut(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
            first, last = _ends(parts, head, tail)
            keep = parts[:first] + parts[last:]
            return np.concatenate([p[1] for p in keep]), np.concatenate([p[2] for p in keep])

        return Run(
            self.run_name,
            self.recorded_layers(),
            {k: cut(v) for k, v in self._mem_metrics.items()},
            {k: cut(v) for k, v in self._mem_scalars.items()},
            [],
            dict(self._run_config),
            path=self.store_path,
        )

    def _diagnose_online(self) -> None:
        try:
            from gradguard.diagnosis.online import new_findings
        except ImportError:
            return
        dcfg = self._diagnosis_config()
        run = self._tail_run(dcfg.start_steps, dcfg.online_window)
        for f in new_findings(run, self._findings_seen, config=dcfg):
            msg = f"gradguard: {f.severity.value} {f.kind}: {f.evidence}"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=_user_stacklevel())
            last = f.steps[1] if f.steps else None
            ev = Event(
                step=last,
                kind=f"finding:{f.kind}",
                layer=f.layers[0] if f.layers else None,
                message=str(f),
                data={"finding": f.to_dict()},
            )
            self._mem_events.append(ev)
            if self._writer is not None:
                self._submit(Batch(events=[ev]))
            self._to_sinks(Batch(events=[ev]))
            if self.on_finding is not None:
                self.on_finding(f)

    def close(self) -> None:
        """Flush, wait for the store, and remove every hook. Safe to call twice."""
        if self._closed:
            return
        try:
            for h in self._handles + self._act_handles + getattr(self, "_trace_handles", []):
                h.remove()
            self._handles.clear()
            self._act_handles.clear()
            self._before = None
            self.flush()
            self._close_sinks()
        finally:
            self._closed = True
            if self._writer is not None:
                self._writer.close()
            if self._store is not None:
                self._store.close()
            _LIVE.discard(self)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ failure isolation
    def _guarded(self, part: str, fn: Callable[[], None]) -> None:
        if self._closed or part in self._failed:
            return
        try:
            fn()
        except GradguardError:
            raise
        except Exception as e:
            self._fail(part, e)

    def _fail(self, part: str, e: BaseException) -> None:
        if self.config.strict:
            raise GradguardError(f"gradguard monitor: {part} failed: {e}") from e
        if part in self._failed:
            return
        self._failed.add(part)
        msg = f"gradguard: {part} failed ({type(e).__name__}: {e}); that part is disabled, training goes on"
        log.error(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=_user_stacklevel())
        if part == "activations":
            self._remove_act_hooks()
            self._act_step = None


_LIVE: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # hooks removed and buffers flushed at interpreter exit
    for mon in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at exit
            mon.close()


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    store: str | os.PathLike[str] | Store | None = None,
    name: str | None = None,
    config: WatchConfig | str | None = None,
    clip: Any = None,
    guard: Any = None,
    on_finding: Callable[[Any], None] | None = None,
    sinks: list[Any] | None = None,
    reducer: Reducer | None = None,
    **options: Any,
) -> Monitor:
    """Start watching ``model`` (and count steps of ``optimizer``).

    Args:
        model: the network.
        optimizer: its optimizer; steps are counted by its step hooks. Without one, call
            ``mon.step()`` after each update.
        store: path of the SQLite store file (created if missing); None keeps the run in memory
            (``mon.run``).
        name: the run's name in the store (default ``run-N``).
        config: a :class:`~gradguard.record.config.WatchConfig` or a preset: "light", "default", "full".
        clip: a ``gg.clip`` clipper whose clips are recorded (norm before and after).
        guard: a ``gg.Guard`` whose skipped steps are recorded as events.
        on_finding: called with each new online finding of severity >= warning.
        sinks: objects with ``write(batch, layers)`` and ``close()`` fed at each flush (e.g.
            ``gradguard.sinks.tensorboard.TensorBoardSink``); a failing sink is reported once and dropped.
        reducer: how per-layer numbers are combined across processes; default: a
            ``gradguard.record.reduce.DistributedReducer`` when torch.distributed is initialised with
            several ranks, else none (pass ``Reducer()`` to keep each rank's own numbers).
        **options: overrides of WatchConfig fields, e.g. ``detail_every=50``, ``flush_every=500``.

    Returns:
        The :class:`Monitor` (also a context manager).

    >>> mon = gg.watch(model, opt, store="runs/exp.db", detail_every=20)   # doctest: +SKIP
    """
    return Monitor(
        model,
        optimizer,
        store=store,
        name=name,
        config=config,
        clip=clip,
        guard=guard,
        on_finding=on_finding,
        sinks=sinks,
        reducer=reducer,
        **options,
    )
