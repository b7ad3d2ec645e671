"""The one exception family of gradguard.

Every error a user can cause (wrong types, a model with no parameters, a broken store file)
is raised as a :class:`GradguardError` whose message names the problem and the fix.
"""

from __future__ import annotations

__all__ = ["GradguardError", "StoreError", "ConfigError"]


class GradguardError(RuntimeError):
    """Base class of every error gradguard raises on purpose."""


class StoreError(GradguardError):
    """The run store could not be opened, read or written."""


class ConfigError(GradguardError, ValueError):
    """An option or argument has a value gradguard cannot use."""
