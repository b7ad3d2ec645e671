"""Failure isolation: a part of gradguard that fails is reported once and switched off, and the
training being watched goes on (``strict=True`` raises instead)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

import torch

from gradguard.errors import GradguardError

__all__ = ["Failures", "user_stacklevel"]

log = logging.getLogger("gradguard")

_OWN_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # gradguard/
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)


def user_stacklevel() -> int:
    """``stacklevel`` for ``warnings.warn`` called right here that points at the user's code: the
    first frame outside gradguard and torch (a finding fires inside ``optimizer.step()``'s hooks,
    whose depth varies), so the warning names the line of the training loop."""
    frame = sys._getframe(1)  # the function that is about to warn
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_DIRS):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class Failures:
    """The parts that failed, each reported once.

    Args:
        strict: raise a :class:`GradguardError` at the first failure instead (for tests and debugging).
    """

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.parts: set[str] = set()

    def __contains__(self, part: str) -> bool:
        return part in self.parts

    def guard(self, part: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` unless ``part`` failed before; a failure other than a GradguardError (a user
        error, raised as is) is reported and switches ``part`` off."""
        if part in self.parts:
            return
        try:
            fn()
        except GradguardError:
            raise
        except Exception as e:
            self.fail(part, e)

    def fail(self, part: str, e: BaseException) -> None:
        if self.strict:
            raise GradguardError(f"gradguard monitor: {part} failed: {e}") from e
        if part in self.parts:
            return
        self.parts.add(part)
        msg = f"gradguard: {part} failed ({type(e).__name__}: {e}); that part is disabled, training goes on"
        log.error(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=user_stacklevel())
