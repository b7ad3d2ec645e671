"""Weight initialisation schemes: the one vocabulary of init names.

``gg.init_`` draws them, the activation table recommends one per activation kind, the remedies
knowledge base tells users to call ``gg.init_`` with one, and the lab's experiments name theirs
with the same words.
"""

from __future__ import annotations

import enum
from typing import Any

from gradguard.errors import ConfigError

__all__ = ["Choice", "Scheme"]


class Choice(str, enum.Enum):
    """A string option that fails early, listing the valid values."""

    @classmethod
    def parse(cls, value: Any, arg: str) -> Any:
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in cls)
            raise ConfigError(f"{arg}={value!r} is not known; use one of {valid}") from None


class Scheme(Choice):
    """Initialisation schemes ("kaiming" and "glorot" are accepted as aliases)."""

    XAVIER = "xavier"  # Glorot & Bengio 2010: Var(W) = gain^2 * 2 / (fan_in + fan_out)
    HE = "he"  # He et al. 2015: Var(W) = gain^2 / fan (fan_in or fan_out)
    ORTHOGONAL = "orthogonal"  # Saxe et al. 2014: W W^T = gain^2 I
    LSUV = "lsuv"  # Mishkin & Matas 2016: orthonormal, then unit output variance on data

    @classmethod
    def _missing_(cls, value: object) -> Scheme | None:
        return {"kaiming": cls.HE, "glorot": cls.XAVIER}.get(str(value).lower())
