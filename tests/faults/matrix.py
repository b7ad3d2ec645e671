"""The fault matrix's registry: each fault test says what it injects, into which models, and what
it asserts; ``docs/reliability.md`` shows the table (test_matrix_doc.py keeps it current).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Fault", "FAULTS", "fault", "register", "table"]

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class Fault:
    """One row of the matrix."""

    group: str  # numeric, precision, model, watch, process, store, cli
    fault: str  # what goes wrong
    models: str  # which models (or command lines) it is tried on
    cases: int  # parametrised cases behind the row
    checks: str  # what the test asserts


FAULTS: list[Fault] = []


def register(group: str, fault: str, models: str, cases: int, checks: str) -> None:
    FAULTS.append(Fault(group, fault, models, cases, checks))


def fault(
    name: str, *, kind: str, count: int = 1, models: str = "", checks: str = "exit 2, one line"
) -> Callable[[F], F]:
    """Decorator form of :func:`register` for a test that is one row."""

    def deco(fn: F) -> F:
        register(kind, name, models, count, checks)
        return fn

    return deco


def table() -> str:
    """The matrix as a Markdown table, in registration order within each group."""
    order = ["numeric", "precision", "model", "watch", "process", "store", "cli"]
    rows = sorted(FAULTS, key=lambda f: order.index(f.group) if f.group in order else len(order))
    out = [
        "| group | fault | models | cases | asserted |",
        "|---|---|---|---:|---|",
    ]
    out += [f"| {f.group} | {f.fault} | {f.models} | {f.cases} | {f.checks} |" for f in rows]
    out.append(f"| **total** | {len(rows)} faults | | **{sum(f.cases for f in rows)}** | |")
    return "\n".join(out) + "\n"
