"""Schedules: callables ``step -> bool`` deciding when a probe runs.

>>> s = every(10)
>>> [k for k in range(25) if s(k)]
[0, 10, 20]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gradguard.errors import ConfigError

__all__ = ["Schedule", "every", "log_spaced", "never", "as_schedule"]

Schedule = Callable[[int], bool]


@dataclass(frozen=True)
class every:  # noqa: N801 - reads like a function at the call site: every(10)
    """True on steps ``start, start + n, start + 2n, ...``."""

    n: int
    start: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"every(n) needs a whole number n >= 1, got {self.n!r}")

    def __call__(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % self.n == 0


@dataclass(frozen=True)
class log_spaced:  # noqa: N801
    """Dense early, sparse late: every step up to ``dense``, then ``per_decade`` steps per decade."""

    dense: int = 10
    per_decade: int = 10

    def __call__(self, step: int) -> bool:
        if step < self.dense:
            return True
        k = math.floor(math.log10(step) * self.per_decade)
        return math.floor(math.log10(step + 1) * self.per_decade) > k or step == self.dense


@dataclass(frozen=True)
class never:  # noqa: N801
    """Never true: switches a probe off."""

    def __call__(self, step: int) -> bool:
        return False


def as_schedule(value: Schedule | int | None) -> Schedule:
    """Accept a schedule, a period ``n >= 1`` (every n steps), or ``None`` (never)."""
    if value is None:
        return never()
    if isinstance(value, bool):
        raise ConfigError("a schedule must be an int period or a callable step -> bool, not a bool")
    if isinstance(value, int) and value < 1:
        raise ConfigError(
            f"a schedule period must be a whole number >= 1, got {value}; pass None (or "
            "gradguard.record.schedules.never()) to switch the probe off"
        )
    if isinstance(value, int):
        return every(value)
    if callable(value):
        return value
    raise ConfigError(f"a schedule must be an int period or a callable step -> bool, got {value!r}")
