"""The first forward pass, traced once: the layers' forward order, the activation module that
consumes each layer's output, and whether the autograd graph has skip connections.

Hooks on every layer, every known activation module and the root module stay until the root's first
forward returns, then come off: later steps pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gradguard.model.activations import ACTIVATION_KINDS
from gradguard.model.layers import LayerInfo, forward_order
from gradguard.model.structure import has_skip_connection
from gradguard.model.tensors import first_tensor
from gradguard.record.batch import Layer

__all__ = ["FirstForwardTrace"]


class FirstForwardTrace:
    """Learns what one forward pass of ``model`` shows about its layers.

    Args:
        model: the root module.
        layers: its watched layers.
        look_for_skips: read the first output's autograd graph for ``h + f(h)`` (skip connections).

    After the first forward, :attr:`order` holds the layer columns in forward order,
    :attr:`activation_of` maps a layer column to the activation module that consumed its output,
    and :attr:`skip_found` says whether a skip connection was seen (with ``look_for_skips``).
    :attr:`graph_seen` says whether the first output had an autograd graph to search (not under
    ``torch.no_grad()``); :attr:`error` holds an exception the skip search raised (the trace
    itself never raises).
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[LayerInfo], *, look_for_skips: bool
    ) -> None:
        self.layers = list(layers)
        self.look_for_skips = look_for_skips
        self.order: list[int] | None = None
        self.activation_of: dict[int, nn.Module] = {}
        self.skip_found = False
        self.graph_seen = False
        self.error: BaseException | None = None
        self._seen: list[int] = []
        self._outputs: dict[int, int] = {}  # id(output tensor) -> layer column
        self._keep: list[torch.Tensor] = []  # outputs kept alive so their ids stay unique
        self._handles: list[Any] = []
        column_of = {id(lay.module): lay.column for lay in self.layers}
        for module in model.modules():
            if id(module) in column_of:
                col = column_of[id(module)]
                self._handles.append(module.register_forward_pre_hook(self._pre(col)))
                self._handles.append(module.register_forward_hook(self._post(col)))
            elif type(module).__name__ in ACTIVATION_KINDS:
                self._handles.append(module.register_forward_hook(self._activation(module)))
        self._handles.append(model.register_forward_hook(self._done))

    @property
    def done(self) -> bool:
        return self.order is not None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()
        self._keep.clear()

    def _pre(self, column: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if column not in self._seen:
                self._seen.append(column)

        return hook

    def _post(self, column: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = first_tensor(output)
            if out is not None:
                self._outputs[id(out)] = column
                self._keep.append(out)

        return hook

    def _activation(self, act: nn.Module) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            inp = first_tensor(args)
            if inp is not None and id(inp) in self._outputs:
                self.activation_of.setdefault(self._outputs[id(inp)], act)

        return hook

    def _done(self, module: nn.Module, args: Any, output: Any) -> None:
        self.order = forward_order(self.layers, list(self._seen))
        if self.look_for_skips:
            try:
                out = first_tensor(output)
                self.graph_seen = getattr(out, "grad_fn", None) is not None
                self.skip_found = has_skip_connection(out)
            except Exception as e:  # never break the forward pass
                self.error = e
        self.remove()

    # ------------------------------------------------------------------ what the trace tells
    def column_order(self, layers: Sequence[LayerInfo]) -> list[int]:
        """Layer columns in forward order (registration order until the first forward)."""
        return self.order if self.order is not None else [lay.column for lay in layers]

    def layer_table(self, layers: Sequence[LayerInfo]) -> list[Layer]:
        """The layer table as stored: forward order, with the activation that follows each layer."""
        out = []
        for pos, col in enumerate(self.column_order(layers)):
            lay = layers[col]
            act = self.activation_of.get(col)
            kind = type(act).__name__ if act is not None else None
            out.append(Layer(pos, lay.name, lay.kind, lay.numel, lay.trainable, kind))
        return out

    def update_run_config(self, cfg: dict[str, Any]) -> bool:
        """Write what the first forward's autograd graph says about skip connections into the run
        config (class names, which gg.watch guessed from, are only a fallback for a forward
        without a graph); returns whether it changed."""
        if not (self.look_for_skips and self.graph_seen):
            return False  # the user said so, or no graph to read: the class-name guess stands
        before = (cfg.get("residual"), cfg.get("residual_module"))
        if self.skip_found:
            cfg["residual"] = True
            cfg.setdefault("residual_module", "autograd graph (h + f(h))")
        else:  # e.g. a "Block" with attention whose residual adds were removed
            cfg["residual"] = False
            cfg.pop("residual_module", None)
        return before != (cfg.get("residual"), cfg.get("residual_module"))
