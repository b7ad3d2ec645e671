"""The store's SQLite schema, and opening a file that must be (or become) a gradguard store.

Tables (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`, ``PRAGMA application_id`` marks the file)::

    runs(id, name, created, config JSON, environment JSON)
    layers(run_id, idx, name, kind, numel, trainable, activation)      -- idx = forward order
    metrics(run_id, metric, step, vals BLOB)   -- one row per (metric, step): float64[L] in layer order
    scalars(run_id, name, step, value)
    events(run_id, step, kind, layer, value, message, data JSON, created)
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gradguard.errors import StoreError

__all__ = ["SCHEMA_VERSION", "connect"]

SCHEMA_VERSION = 1
_APP_ID = 0x67726764  # "grgd": marks a SQLite file as a gradguard store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    environment TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS layers (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    numel INTEGER NOT NULL,
    trainable INTEGER NOT NULL,
    activation TEXT,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    metric TEXT NOT NULL,
    step INTEGER NOT NULL,
    vals BLOB NOT NULL,
    PRIMARY KEY (run_id, metric, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scalars (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER,
    kind TEXT NOT NULL,
    layer TEXT,
    value REAL,
    message TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);
"""


def connect(path: Path, *, create: bool, read_only: bool = False) -> sqlite3.Connection:
    """Open (or create) a store file and check that it is one."""
    path = Path(path)
    if create:
        parent = path.resolve().parent
        try:  # store="runs/exp.db" works without a runs/ directory, as users expect
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create store {str(path)!r}: directory {str(parent)!r} cannot be made "
                f"({e}); pass a store path in a writable directory"
            ) from e
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise StoreError(
                f"cannot write store {str(path)!r}: {str(parent)!r} is read-only for this user; "
                "pass a store path in a writable directory"
            )
    elif not path.is_file():
        raise StoreError(
            f"no store at {str(path)!r}; check the path (gradguard writes it with watch(store=...))"
        )
    try:
        if read_only:
            conn = _open_read_only(path)
        else:
            conn = sqlite3.connect(
                str(path), timeout=30.0, check_same_thread=False, isolation_level=None
            )
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        n_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.OperationalError as e:
        raise StoreError(
            f"cannot open store {str(path)!r} ({e}); the directory may be read-only or the disk full: "
            "pass a store path in a writable directory"
        ) from e
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"{str(path)!r} is not a gradguard store (not an SQLite database: {e}); "
            "pass the .db file written by gg.watch(store=...)"
        ) from e
    if app_id != _APP_ID and (n_tables > 0 or not create):
        conn.close()
        raise StoreError(
            f"{str(path)!r} is an SQLite file but not a gradguard store; "
            "pass the .db file written by gg.watch(store=...), or a new path"
        )
    if create and app_id != _APP_ID:
        conn.execute(f"PRAGMA application_id = {_APP_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"{str(path)!r} was written by a newer gradguard (schema {version} > {SCHEMA_VERSION}); "
            "upgrade gradguard to read it"
        )
    if create:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except sqlite3.OperationalError as e:
            conn.close()
            raise StoreError(
                f"cannot write store {str(path)!r} ({e}); pass a store path in a writable directory"
            ) from e
    return conn


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Open a store for reading without writing anything (``mode=ro``). A WAL-mode file in a
    directory this user cannot write (where SQLite cannot create its ``-shm`` file) is opened
    ``immutable``: nobody can be writing it from there either."""
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(
        f"{uri}?mode=ro", uri=True, timeout=30.0, check_same_thread=False, isolation_level=None
    )
    try:
        conn.execute("PRAGMA application_id").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.resolve().parent, os.W_OK):
            raise
    return sqlite3.connect(
        f"{uri}?immutable=1", uri=True, timeout=30.0, check_same_thread=False, isolation_level=None
    )
