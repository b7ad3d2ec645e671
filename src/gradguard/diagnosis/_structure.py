"""What the diagnosis can learn about a model's architecture at ``watch`` time, cheaply.

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
(:func:`gradguard.layers.has_skip_connection`). ``run_config={"residual": ...}`` overrides both.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["residual_hint"]

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
