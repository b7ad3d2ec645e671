"""``locate_nonfinite``: replay one batch and name the first module where NaN/Inf appears.

>>> where = gg.locate_nonfinite(model, x, loss_fn, y)   # doctest: +SKIP
>>> print(where)                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradguard.errors import GradguardError
from gradguard.model.tensors import call_model, default_loss
from gradguard.preflight.state import PreservedState
from gradguard.remedies._checks import check_module
from gradguard.remedies._tensor_stats import TensorStats, iter_tensors

__all__ = ["NonfiniteLocation", "TensorStats", "locate_nonfinite"]


@dataclass(frozen=True)
class NonfiniteLocation:
    """Where a batch first produced NaN or Inf.

    ``phase`` is "input" (the batch itself), "forward" (the first module, in forward order,
    whose output is non-finite), "loss" (the model output is finite, the loss is not) or
    "backward" (the first module in backward order, i.e. the one closest to the loss, whose
    gradient w.r.t. its inputs or parameters is non-finite). For "backward", ``inputs`` are the
    gradients flowing in (w.r.t. the module's outputs) and ``outputs`` the gradients it produced.
    """

    phase: str
    module: str  # qualified name; "(root)" for the model, "(input)" / "(loss_fn)" otherwise
    kind: str  # module class name
    inputs: tuple[TensorStats, ...]
    outputs: tuple[TensorStats, ...]
    previous: str | None  # last module before it (same order) whose values were all finite
    note: str

    def __str__(self) -> str:
        order = {
            "forward": "first module in forward order with a non-finite output",
            "backward": "first module in backward order (closest to the loss) with a non-finite gradient",
            "loss": "model output finite, loss non-finite",
            "input": "the batch itself is non-finite",
        }[self.phase]
        lines = [f"non-finite in {self.phase}: {self.module} [{self.kind}] — {order}"]
        lines += [f"  in  {s}" for s in self.inputs]
        lines += [f"  out {s}" for s in self.outputs]
        if self.previous is not None:
            lines.append(f"  last finite module before it: {self.previous}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _stats(obj: Any, prefix: str) -> tuple[TensorStats, ...]:
    return tuple(TensorStats.of(label, t) for label, t in iter_tensors(obj, prefix))


def _finite(obj: Any) -> bool:
    return all(
        bool(torch.isfinite(t).all()) for _, t in iter_tensors(obj, "") if t.is_floating_point()
    )


def _with_grad(data: Any) -> Any:
    """A copy of the batch whose float tensors require grad, so every module reports grad_input."""
    if isinstance(data, torch.Tensor):
        return data.detach().requires_grad_(True) if data.is_floating_point() else data
    if isinstance(data, (tuple, list)):
        return type(data)(_with_grad(d) for d in data)
    if isinstance(data, dict):
        return {k: _with_grad(v) for k, v in data.items()}
    return data


class _Replay:
    """Hooks on every module; remembers the first non-finite event in each direction."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: (n or "(root)") for n, m in model.named_modules()}
        self.found: NonfiniteLocation | None = None
        self.last_ok: str | None = None
        self.handles: list[Any] = []

    def forward_hook(self, m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if self.found is not None:
            return
        if _finite(out):
            self.last_ok = self.names[m]
            return
        ins = _stats((args, kwargs) if kwargs else args, "input")
        note = ""
        if not all(s.finite for s in ins):
            note = (
                "its inputs were already non-finite: the value was made between the previous "
                "module and this one (a functional op in a parent's forward, or the batch)"
            )
        self.found = NonfiniteLocation(
            "forward",
            self.names[m],
            type(m).__name__,
            ins,
            _stats(out, "output"),
            self.last_ok,
            note,
        )

    def backward_hook(self, m: nn.Module, grad_input: Any, grad_output: Any) -> None:
        if self.found is not None:
            return
        if _finite(grad_input):
            self.last_ok = self.names[m]
            return
        self._found_backward(
            m, _stats(grad_output, "grad_output"), _stats(grad_input, "grad_input")
        )

    def param_hook(self, m: nn.Module, pname: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if self.found is None and not _finite(grad):
                self._found_backward(m, (), (TensorStats.of(f"grad of {pname}", grad),))

        return hook

    def _found_backward(
        self, m: nn.Module, ins: tuple[TensorStats, ...], outs: tuple[TensorStats, ...]
    ) -> None:
        note = ""
        if ins and not all(s.finite for s in ins):
            note = (
                "the gradient flowing into it (grad_output) was already non-finite: it was made "
                "between the previous module and this one, or by the loss"
            )
        self.found = NonfiniteLocation(
            "backward", self.names[m], type(m).__name__, ins, outs, self.last_ok, note
        )


def locate_nonfinite(
    model: nn.Module,
    inputs: Any,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    target: Any = None,
) -> NonfiniteLocation | None:
    """Replay one batch with hooks on every module; return where NaN/Inf first appears.

    Forward hooks check each module's output in forward (completion) order; if the forward and
    the loss are finite, full backward hooks and parameter hooks check gradients in backward
    order. The model is left as it was: parameter ``.grad``, buffers (BatchNorm statistics),
    the RNG state and ``inplace`` flags are restored and every hook removed, also when the
    model raises. One forward and one backward; reads values on the host: a diagnostic, not for every step.

    Args:
        model: the model.
        inputs: the batch: a tensor, a tuple of positional args or a dict of keyword args.
        loss_fn: ``loss_fn(output, target)`` (or ``loss_fn(output)`` without target); if
            None the loss is the output itself when scalar, else its sum.
        target: the target passed to ``loss_fn``.

    Returns:
        A :class:`NonfiniteLocation`, or None when forward and backward stay finite.

    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> locate_nonfinite(net, torch.ones(1, 2)) is None
    True
    """
    check_module(model, "locate_nonfinite")
    if loss_fn is not None and not callable(loss_fn):
        raise GradguardError(
            f"locate_nonfinite: loss_fn must be callable, got {type(loss_fn).__name__}; "
            "pass e.g. torch.nn.functional.cross_entropy"
        )
    if not _finite(inputs):
        return NonfiniteLocation(
            "input", "(input)", type(inputs).__name__, _stats(inputs, "input"), (), None, ""
        )
    replay = _Replay(model)
    params = [(m, n, p) for m in model.modules() for n, p in m.named_parameters(recurse=False)]
    # .grad, buffers, modes and RNG states (CUDA's only if CUDA is already initialised: asking
    # for it would create a CUDA context on a CPU-only run); shared with gg.check's preflight
    saved = PreservedState(model)
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    try:
        for m in inplace:  # in-place ops on hooked outputs break full backward hooks
            m.inplace = False  # type: ignore[assignment]
        for _, _, p in params:
            p.grad = None
        for m in model.modules():
            replay.handles.append(m.register_forward_hook(replay.forward_hook, with_kwargs=True))
            replay.handles.append(m.register_full_backward_hook(replay.backward_hook))
        for m, n, p in params:
            if p.requires_grad:
                replay.handles.append(p.register_hook(replay.param_hook(m, n)))
        with torch.enable_grad():
            out = call_model(model, _with_grad(inputs))
            if replay.found is not None:
                return replay.found
            loss = default_loss(out, loss_fn, target)
            if not _finite(loss):
                return NonfiniteLocation(
                    "loss", "(loss_fn)", getattr(loss_fn, "__name__", type(loss_fn).__name__),
                    _stats(out, "output"), _stats(loss, "loss"), replay.last_ok, "",
                )  # fmt: skip
            replay.last_ok = None  # from here on: backward order
            if loss.requires_grad:
                loss.backward()
        return replay.found
    except GradguardError:
        raise
    except Exception as e:
        raise GradguardError(
            f"locate_nonfinite: the model raised {type(e).__name__} while replaying the batch: {e}; "
            "check that `inputs` is what model(...) takes (a tuple is unpacked as positional args)"
        ) from e
    finally:
        for h in replay.handles:
            h.remove()
        for m in inplace:
            m.inplace = True  # type: ignore[assignment]
        saved.restore()
