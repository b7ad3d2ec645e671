"""Classic clipping: by global norm (``Norm``) and by value (``Value``)."""

from __future__ import annotations

from typing import Any

import torch

from gradguard.record.kernels import group_by_device, scale_, total_norm
from gradguard.remedies._checks import check_number
from gradguard.remedies._clipper import Clipper, norm_factor

__all__ = ["Norm", "Value"]


class Norm(Clipper):
    """Rescale all gradients together so their global L2 norm is at most ``max_norm``.

    A re-implementation of ``torch.nn.utils.clip_grad_norm_`` with the same foreach kernels,
    not a call to it: on finite fp32 gradients the same norm and gradients (tested against it).
    On purpose it differs where torch's result is useless: per-tensor norms are accumulated in
    float32 (torch's fp16 norms overflow past 65504 and zero the gradients), and a non-finite
    norm leaves the gradients untouched instead of multiplying them by 0 or NaN.

    Args:
        max_norm: the largest global gradient norm allowed (> 0).

    >>> clipper = Norm(1.0)
    >>> # loss.backward(); norm = clipper(model.parameters()); optimizer.step()
    """

    def __init__(self, max_norm: float) -> None:
        super().__init__()
        self.max_norm = check_number("max_norm", max_norm, low=0.0, high=None)

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        norm = total_norm(grads)
        factor = norm_factor(norm, torch.full_like(norm, self.max_norm))
        scale_(grads, factor)
        return norm, norm * factor

    def _config(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm}


class Value(Clipper):
    """Clamp every gradient element into ``[-clip_value, clip_value]``.

    Same result as ``torch.nn.utils.clip_grad_value_``: foreach kernels on accelerators, one
    in-place ``clamp_`` per tensor on CPU (one pass instead of two). NaN elements stay NaN.

    Args:
        clip_value: the largest absolute gradient element allowed (> 0).

    >>> clipper = Value(0.5)
    """

    def __init__(self, clip_value: float) -> None:
        super().__init__()
        self.clip_value = check_number("clip_value", clip_value, low=0.0, high=None)

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        norm = total_norm(grads)
        v = self.clip_value
        for dev, dev_grads in group_by_device(grads).items():
            if dev.type == "cpu":  # one read-modify-write pass, multi-threaded per tensor
                for g in dev_grads:
                    g.clamp_(-v, v)
            else:  # accelerators: few launches matter more than one extra pass
                torch._foreach_clamp_min_(dev_grads, -v)
                torch._foreach_clamp_max_(dev_grads, v)
        return norm, None

    def _config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}
