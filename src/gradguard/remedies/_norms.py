"""Sync-free gradient arithmetic over lists of tensors (foreach kernels, grouped by device).

Everything here returns device tensors and never reads a value on the host.
"""

from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["group_by_device", "total_norm", "scale_"]


def group_by_device(tensors: list[torch.Tensor]) -> dict[torch.device, list[torch.Tensor]]:
    """Split ``tensors`` by device, keeping order inside each group (foreach needs one device)."""
    groups: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        groups[t.device].append(t)
    return groups


def total_norm(grads: list[torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
    """L2 norm of all ``grads`` taken together, accumulated in float32 (fp16 cannot overflow).

    Args:
        grads: gradient tensors (any float dtype, any devices).
        device: where the result lives; defaults to the first gradient's device.

    Returns:
        0-d float32 tensor; ``tensor(0.)`` when ``grads`` is empty.
    """
    if not grads:
        return torch.zeros((), dtype=torch.float32, device=device)
    out_device = device if device is not None else grads[0].device
    norms: list[torch.Tensor] = []
    for dev_grads in group_by_device(grads).values():
        # one foreach kernel per device: (n_tensors,) norms in float32
        norms.extend(torch._foreach_norm(dev_grads, 2, dtype=torch.float32))
    return torch.linalg.vector_norm(torch.stack([n.to(out_device) for n in norms]))


def scale_(grads: list[torch.Tensor], factor: torch.Tensor) -> None:
    """Multiply every gradient in place by the 0-d tensor ``factor`` (no host read)."""
    for dev, dev_grads in group_by_device(grads).items():
        torch._foreach_mul_(dev_grads, factor.to(dev))
