"""Tensors gradguard reads off a model: the tensor a call produced, the local shard of a parameter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["first_tensor", "local"]


def first_tensor(x: Any) -> torch.Tensor | None:
    """The tensor a module call produced (or got): ``x`` itself; the ``logits`` of a mapping or a
    Hugging Face ``ModelOutput`` when present; else the first tensor found depth-first in a
    mapping's values or a tuple/list. None if there is none.

    >>> first_tensor((None, torch.ones(2))).tolist()
    [1.0, 1.0]
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, Mapping) or hasattr(x, "logits"):
        logits = x.get("logits") if isinstance(x, Mapping) else getattr(x, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        for v in x.values() if isinstance(x, Mapping) else ():
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, tuple | list):
        for v in x:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), else the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t
