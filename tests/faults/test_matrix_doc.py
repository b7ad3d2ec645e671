"""docs/reliability.md shows the fault matrix as this suite registers it (tests/faults/matrix.py).

``GRADGUARD_UPDATE_DOCS=1 pytest tests/faults/test_matrix_doc.py`` rewrites the table after an
intended change to the suite.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from tests.faults import matrix

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"


def current_table() -> str:
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        importlib.import_module(f"tests.faults.{path.stem}")  # each registers its rows
    return matrix.table()


def test_the_doc_shows_the_suites_matrix() -> None:
    text = DOC.read_text()
    head, sep, rest = text.partition(BEGIN)
    body, sep2, tail = rest.partition(END)
    assert sep and sep2, f"{DOC} lacks the {BEGIN} ... {END} markers"
    want = "\n" + current_table()
    if os.environ.get("GRADGUARD_UPDATE_DOCS") == "1":
        DOC.write_text(head + BEGIN + want + END + tail)
        body = want
    assert body == want, "the fault matrix changed: GRADGUARD_UPDATE_DOCS=1 rewrites the table"


def test_every_row_is_counted_once() -> None:
    current_table()
    names = [(f.group, f.fault) for f in matrix.FAULTS]
    assert len(names) == len(set(names)), "a fault is registered twice"
    assert all(f.cases >= 1 and f.checks for f in matrix.FAULTS)
