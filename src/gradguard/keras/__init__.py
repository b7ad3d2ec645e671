"""Keras 3 (TensorFlow, JAX or PyTorch backend): gradient flow into the same gradguard store.

``model.fit(..., callbacks=[gradguard.keras.Watch(store="runs/exp.db")])`` records per-layer
gradient statistics; ``gradguard show / diagnose / report`` read the store as they read a PyTorch
run. Custom training loops use :func:`watch`. Needs ``pip install gradguard[keras]``.
"""

from __future__ import annotations

try:
    import keras as _keras
except ImportError as e:  # pragma: no cover - the extra is installed wherever this is tested
    from gradguard.errors import GradguardError

    raise GradguardError(
        "gradguard.keras needs Keras 3: pip install 'gradguard[keras]' (and a backend: "
        "tensorflow-cpu, jax[cpu] or torch)"
    ) from e

if int(_keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    from gradguard.errors import GradguardError

    raise GradguardError(
        f"gradguard.keras needs Keras >= 3, found {_keras.__version__}; pip install -U keras"
    )

from gradguard.keras._callback import Watch
from gradguard.keras._check import check
from gradguard.keras._recorder import KerasMonitor, watch

__all__ = ["Watch", "KerasMonitor", "watch", "check"]
