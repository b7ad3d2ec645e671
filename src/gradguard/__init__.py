"""gradguard — see, diagnose and fix vanishing and exploding gradients in PyTorch.

>>> import gradguard as gg
>>> mon = gg.watch(model, optimizer, store="runs/exp.db")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# A library's logger stays silent until the application configures logging: findings and failures
# reach the user once, through ``warnings``, instead of twice (a warning plus logging's last resort).
logging.getLogger("gradguard").addHandler(logging.NullHandler())

# name -> module that defines it; imported on first use so `import gradguard` stays cheap.
_LAZY = {
    "watch": "gradguard.watching",
    "Monitor": "gradguard.watching",
    "WatchConfig": "gradguard.record.config",
    "load": "gradguard.runs.store",
    "Run": "gradguard.runs.run",
    "Store": "gradguard.runs.store",
    "diagnose": "gradguard.diagnosis",
    "Finding": "gradguard.diagnosis.finding",
    "Severity": "gradguard.diagnosis.finding",
    "Remedy": "gradguard.diagnosis.finding",
    "check": "gradguard.preflight",
    "CheckReport": "gradguard.preflight",
    "init_": "gradguard.remedies.init",
    "fix": "gradguard.remedies.fix",
    "Guard": "gradguard.remedies.guard",
    "locate_nonfinite": "gradguard.remedies.locate",
    "GradguardError": "gradguard.errors",
    "every": "gradguard.record.schedules",
    "log_spaced": "gradguard.record.schedules",
}
# gg.keras needs the keras extra; imported only when used
_SUBMODULES = {
    "clip": "gradguard.remedies.clip",
    "theory": "gradguard.theory",
    "keras": "gradguard.keras",
}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'gradguard' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
