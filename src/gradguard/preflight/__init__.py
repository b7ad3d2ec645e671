"""Preflight: one forward/backward at initialisation that predicts gradient trouble.

``check`` (check.py) observes one forward pass (observe.py), takes the gradients and the
input-output Jacobian spectrum (jacobian.py), turns them into a verdict and findings (verdict.py),
and leaves the model as it found it (state.py).
"""

from gradguard.preflight.check import CheckReport, LayerRow, check

__all__ = ["CheckReport", "LayerRow", "check"]
