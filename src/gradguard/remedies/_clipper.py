"""Base class of the gradient clippers: parameter handling and the Monitor hook-up."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from gradguard.errors import GradguardError
from gradguard.metrics import CLIP_NORM_AFTER, CLIP_NORM_BEFORE
from gradguard.record.kernels import total_norm
from gradguard.remedies._checks import grads_of, params_list

__all__ = ["Clipper", "norm_factor"]


class Clipper:
    """A gradient clipper: ``clipper(parameters) -> total norm before clipping`` (0-d tensor).

    Subclasses implement :meth:`_clip`. Nothing on the call path reads a value on the host:
    decisions are made with ``torch.where``/``clamp`` and applied as a multiplicative factor,
    so a CUDA training loop is never stalled.
    """

    def __init__(self) -> None:
        self._monitor: Any = None

    def attach(self, monitor: Any) -> None:
        """Record ``clip_norm_before`` / ``clip_norm_after`` into ``monitor`` on every call.

        Called by ``gg.watch(..., clip=clipper)``; the values are logged as tensors (no sync).
        """
        self._monitor = monitor

    @torch.no_grad()
    def __call__(self, parameters: Any) -> torch.Tensor:
        """Clip the gradients of ``parameters`` in place.

        Args:
            parameters: a tensor or an iterable of tensors (e.g. ``model.parameters()``);
                parameters without ``.grad`` are ignored.

        Returns:
            The L2 norm of all gradients before clipping (0-d float32 tensor on the grads' device).
        """
        params = params_list(parameters, type(self).__name__)
        grads = grads_of(params)
        if not grads:
            return torch.zeros((), dtype=torch.float32)
        before, after = self._clip(params, grads)
        if self._monitor is not None:
            if after is None:  # clippers that change the direction need a second norm
                after = total_norm(grads)
            try:
                self._monitor.log(**{CLIP_NORM_BEFORE: before, CLIP_NORM_AFTER: after})
            except Exception as e:  # recording must never break the training it watches
                warnings.warn(
                    f"gradguard: clip stopped logging to the monitor: {e}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._monitor = None
        return before

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The clipper's device state (clones), for checkpoints; empty for stateless clippers."""
        return {k: v.clone() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for k, v in state.items():
            if not hasattr(self, k):
                raise GradguardError(
                    f"{type(self).__name__} has no state {k!r}; load a state_dict saved from the same clipper class"
                )
            setattr(self, k, v.clone())

    def _clip(
        self, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clip ``grads`` in place; return (norm before, norm after or None if not known)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({fields})"

    def _config(self) -> dict[str, Any]:
        return {}


def norm_factor(norm: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``min(1, threshold / norm)``; exactly 1 where the norm or threshold is not finite.

    A non-finite norm leaves the gradients as they are (they are broken anyway, and a
    :class:`~gradguard.Guard` wants to see them); ``1e-6`` guards a zero norm, like torch does.
    """
    factor = torch.clamp(threshold / (norm + 1e-6), max=1.0)
    ok = torch.isfinite(norm) & torch.isfinite(threshold)
    return torch.where(ok, factor, torch.ones_like(factor))
