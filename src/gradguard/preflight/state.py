"""Leave the model exactly as found: modes, requires_grad, .grad, buffers and the RNG state."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["PreservedState"]


class PreservedState:
    """Snapshot of everything a forward/backward pass may change; :meth:`restore` puts it back.

    Parameters are never written by the check (no optimizer step, gradients via
    ``torch.autograd.grad`` rather than ``.backward()``), but ``.grad`` references are restored
    anyway, BatchNorm running statistics (buffers) are copied back in place, and the global torch
    (and CUDA, numpy, python) RNG states are reset so dropout draws leave no trace.
    """

    def __init__(self, model: nn.Module) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        params = list(model.parameters())
        self.requires_grad = [(p, p.requires_grad) for p in params]
        self.grads = [(p, p.grad) for p in params]
        with torch.no_grad():
            self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng: list[Any] | None = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_rng = torch.cuda.get_rng_state_all()
        self.np_rng = np.random.get_state()
        self.py_rng = random.getstate()

    def restore_rng(self) -> None:
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        np.random.set_state(self.np_rng)
        random.setstate(self.py_rng)

    def restore(self) -> None:
        for m, mode in self.training:
            m.training = mode
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for p, g in self.grads:
            p.grad = g
        with torch.no_grad():
            for b, saved in self.buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        self.restore_rng()
