"""A refused write says what it means: SQLite reports a full disk under a file-size limit only as
"disk I/O error" (tests/faults/test_store.py hits the real limit in a subprocess)."""

from __future__ import annotations

import sqlite3

from gradguard.runs.store import _meaning


def test_io_error_names_its_likely_causes() -> None:
    e = sqlite3.OperationalError("disk I/O error")
    e.sqlite_errorname = "SQLITE_IOERR_WRITE"  # type: ignore[attr-defined]
    got = _meaning(e)
    assert got.startswith("disk I/O error") and "file-size limit" in got and "disk is full" in got
    other = sqlite3.OperationalError("database is locked")
    other.sqlite_errorname = "SQLITE_BUSY"  # type: ignore[attr-defined]
    assert _meaning(other) == "database is locked"
