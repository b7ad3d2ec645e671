"""Preflight: one forward/backward at initialisation that predicts gradient trouble.

``check`` (checking.py) observes one forward pass (observe.py), takes the gradients and the
input-output Jacobian spectrum (jacobian.py), turns them into a verdict and findings (verdict.py),
returns a :class:`CheckReport` (report.py), and leaves the model as it found it (state.py). No
submodule is called ``check``: importing it would shadow the function on the package.
"""

from gradguard.preflight.checking import check
from gradguard.preflight.jacobian import JacobianStats
from gradguard.preflight.report import CheckReport, LayerRow

__all__ = ["CheckReport", "JacobianStats", "LayerRow", "check"]
