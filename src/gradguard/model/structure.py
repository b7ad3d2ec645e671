"""Whether a model has skip (residual) connections: from class names, and from the autograd graph.

:func:`residual_hint` tells whether the model has residual (skip) connections, so that the
remedies do not suggest adding them again. It reads module class names only (no tracing, no
forward pass), which is robust but a heuristic:

- a module whose class name contains ``Res`` followed by a capital or digit (``ResNet``,
  ``ResBlock``, ``ResMLP``, ``Res2Net``), ``Residual``/``residual``, ``Bottleneck``,
  ``BasicBlock`` (torchvision's ResNet blocks) or ``Skip``;
- a transformer block: a module whose class name ends in ``Block`` or ``Layer`` and that has a
  direct child whose class name contains ``Attention`` (``nn.TransformerEncoderLayer``,
  ``BertLayer``, ``GPT2Block``, ``LlamaDecoderLayer``, timm's ``Block``): every standard
  transformer block adds its attention and MLP outputs to its input.

A skip connection written inline in a module with a neutral name (``x = x + self.fc(x)`` inside
``class Net``) is not seen here; the Monitor finds it in the first forward pass's autograd graph
(:func:`has_skip_connection`). ``run_config={"residual": ...}`` overrides both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["residual_hint", "has_skip_connection"]

_RESIDUAL_NAME = re.compile(r"Res[A-Z0-9]|[Rr]esidual|Bottleneck|BasicBlock|Skip")
_BLOCK_NAME = re.compile(r"(Block|Layer)$")


def residual_hint(model: Any) -> str | None:
    """The class name of the first module that shows residual structure, or None.

    Args:
        model: a ``torch.nn.Module`` (anything with ``modules()`` and ``children()``).

    >>> residual_hint(torchvision.models.resnet18())   # doctest: +SKIP
    'ResNet'
    """
    modules = getattr(model, "modules", None)
    if not callable(modules):
        return None
    for m in modules():
        name = type(m).__name__
        if _RESIDUAL_NAME.search(name):
            return name
        if _BLOCK_NAME.search(name) and any("Attention" in type(c).__name__ for c in m.children()):
            return name
    return None


def has_skip_connection(output: object, *, max_nodes: int = 50_000, reach: int = 512) -> bool:
    """Whether the autograd graph behind ``output`` adds a tensor to a function of itself.

    A skip connection ``h + f(h)`` is an add node one of whose inputs is reachable from the other
    (through ``f``'s graph). Parameters (graph leaves) do not count: ``w + g(w)`` is a
    reparametrisation, and two independent branches summed (token + position embeddings, a
    recurrent ``W x_t + U h_{t-1}``) share only leaves. Weighted skips (``a*h + f(h)``) are not
    seen. Reads the graph once (the first forward pass), at most ``max_nodes`` nodes and
    ``reach`` nodes per add; no graph (``no_grad``) gives False.

    >>> import torch
    >>> x = torch.randn(3, requires_grad=True)
    >>> h = torch.tanh(x)
    >>> has_skip_connection(h + torch.sin(h)), has_skip_connection(torch.sin(h) + torch.cos(x))
    (True, False)
    """
    root = getattr(output, "grad_fn", None)
    if root is None:
        return False
    for node in _walk(root, max_nodes):
        if type(node).__name__.startswith("AddBackward"):
            nexts = [f for f, _ in node.next_functions if f is not None]
            if len(nexts) == 2:
                a, b = nexts
                if _reaches(b, a, reach) or _reaches(a, b, reach):
                    return True
    return False


def _walk(start: Any, limit: int) -> Iterator[Any]:
    """The autograd nodes upstream of ``start`` (itself included), each once, at most ``limit``."""
    seen: set[object] = set()
    stack = [start]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(f for f, _ in node.next_functions if f is not None)


def _reaches(src: Any, dst: Any, limit: int) -> bool:
    """Whether autograd node ``dst`` (not a leaf) lies upstream of ``src`` within ``limit`` nodes."""
    if type(dst).__name__ == "AccumulateGrad":
        return False
    return any(node is dst for node in _walk(src, limit))
