"""Integrations with training frameworks; each module imports its framework only when imported.

- ``gradguard.integrations.lightning.GradguardCallback``: PyTorch Lightning ``Trainer`` callback.
- ``gradguard.integrations.transformers.GradguardCallback``: Hugging Face ``Trainer`` callback.
"""

from __future__ import annotations

__all__ = ["lightning", "transformers"]
