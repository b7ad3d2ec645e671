"""The Finding: what a rule (or the preflight check) tells a person.

Compute and present stay apart: rules return these frozen dataclasses; the terminal and HTML
reports render them (``__str__`` for plain text, ``__rich__`` for rich consoles).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported where used (an optional dependency)
    from rich.panel import Panel
    from rich.text import Text

__all__ = ["Severity", "Remedy", "Finding"]


class Severity(str, enum.Enum):
    """How much a finding matters. Ordered: INFO < WARNING < CRITICAL."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


@dataclass(frozen=True)
class Remedy:
    """One thing to try: a short name, why it helps here, and a one-line how-to."""

    name: str
    why: str
    how: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "why": self.why, "how": self.how}


@dataclass(frozen=True)
class Finding:
    """A diagnosis a person can act on.

    Args:
        kind: rule name, e.g. ``"vanishing_gradients"``, ``"nonfinite"``, ``"healthy"``.
        severity: info / warning / critical.
        layers: names of the layers concerned, in forward order.
        steps: ``(first, last)`` optimizer steps the evidence covers, or None (preflight).
        evidence: the numbers that triggered it, in a sentence.
        cause: one or two plain sentences on why this happens.
        remedies: ranked, best first.
        data: the raw numbers behind the evidence (for JSON, plots and tests).
    """

    kind: str
    severity: Severity
    layers: tuple[str, ...] = ()
    steps: tuple[int, int] | None = None
    evidence: str = ""
    cause: str = ""
    remedies: tuple[Remedy, ...] = ()
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def title(self) -> str:
        return self.kind.replace("_", " ")

    def where(self, max_layers: int = 4) -> str:
        """Which layers and steps, for a person: ``layers a, b (+3 more); steps 10..20``."""
        parts = []
        if self.layers:
            shown = ", ".join(self.layers[:max_layers]) + (
                f" (+{len(self.layers) - max_layers} more)" if len(self.layers) > max_layers else ""
            )
            parts.append(f"layers {shown}")
        if self.steps is not None:
            a, b = self.steps
            parts.append(f"step {a}" if a == b else f"steps {a}..{b}")
        return "; ".join(parts)

    def __str__(self) -> str:
        head = f"[{self.severity.value.upper()}] {self.title}"
        where = self.where()
        if where:
            head += f" ({where})"
        lines = [head]
        if self.evidence:
            lines.append(f"  evidence: {self.evidence}")
        if self.cause:
            lines.append(f"  cause:    {self.cause}")
        for i, r in enumerate(self.remedies, 1):
            lines.append(f"  {i}. {r.name}: {r.why} -> {r.how}")
        return "\n".join(lines)

    def __rich__(self) -> Panel:
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        color = {"info": "green", "warning": "yellow", "critical": "red"}[self.severity.value]
        body: list[Text] = []
        where = self.where()
        if where:
            body.append(Text(where, style="dim"))
        if self.evidence:
            body.append(Text.assemble(("evidence ", "bold"), self.evidence))
        if self.cause:
            body.append(Text.assemble(("cause    ", "bold"), self.cause))
        for i, r in enumerate(self.remedies, 1):
            body.append(
                Text.assemble(
                    (f"{i}. {r.name}", "bold cyan"), f" — {r.why}\n   → ", (r.how, "italic")
                )
            )
        title = Text.assemble(
            (self.severity.value.upper(), f"bold {color}"), " ", (self.title, "bold")
        )
        return Panel(Group(*body), title=title, title_align="left", border_style=color, expand=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "layers": list(self.layers),
            "steps": list(self.steps) if self.steps is not None else None,
            "evidence": self.evidence,
            "cause": self.cause,
            "remedies": [r.to_dict() for r in self.remedies],
            "data": _jsonable(self.data),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        """The inverse of :meth:`to_dict` (a finding stored as an event's data)."""
        steps = d.get("steps")
        return cls(
            kind=str(d["kind"]),
            severity=Severity(d["severity"]),
            layers=tuple(d.get("layers") or ()),
            steps=(int(steps[0]), int(steps[1])) if steps else None,
            evidence=str(d.get("evidence", "")),
            cause=str(d.get("cause", "")),
            remedies=tuple(
                Remedy(name=r["name"], why=r.get("why", ""), how=r.get("how", ""))
                for r in d.get("remedies") or ()
            ),
            data=dict(d.get("data") or {}),
        )


def _jsonable(x: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into plain JSON types (NaN/Inf become None)."""
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, enum.Enum):
        return x.value
    return x
