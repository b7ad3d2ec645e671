"""The run store: one SQLite file (WAL mode) holding one or more runs.

The schema is in :mod:`gradguard.runs.schema`.

Per-layer values are stored as one little-endian float64 blob per metric and step, so a metric of a
run reads back as one ``[steps, layers]`` array without a pivot. Writes are batched: the Monitor
hands a whole flush to :class:`StoreWriter`, which commits it in one transaction on a background
thread. A committed transaction survives a ``kill -9`` of the training process (WAL,
``synchronous=NORMAL``).

>>> run = load("runs/exp.db")                 # doctest: +SKIP
>>> steps, values = run.metric("grad_norm")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradguard.errors import StoreError
from gradguard.record.batch import Batch, Event, Layer
from gradguard.runs.run import Run
from gradguard.runs.schema import connect

__all__ = ["Store", "load", "list_runs", "delete_runs"]

log = logging.getLogger("gradguard")


def store_path(path: Any, what: str) -> Path:
    """``path`` as a Path, or a clear error for what is not a path (``store=123``, ``load(None)``)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise StoreError(
            f"{what} must be a file path (str or pathlib.Path), got {type(path).__name__} "
            f"{path!r}; e.g. 'runs/exp.db'"
        )
    return Path(path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    """A gradguard store file: create runs, write batches, read runs back.

    Args:
        path: the SQLite file; created (with its tables) if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = store_path(path, "store")
        self._conn = connect(self.path, create=True)
        self._inode = os.stat(self.path).st_ino
        self._lock = threading.Lock()

    def create_run(
        self,
        name: str | None,
        config: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> tuple[int, str]:
        """Insert a run and return ``(run_id, name)``; a missing name becomes ``run-N``."""
        with self._lock:
            # one write transaction: two processes creating unnamed runs at once get run-1, run-2
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if name is None:
                    n = self._conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                    taken = {r[0] for r in self._conn.execute("SELECT name FROM runs")}
                    while f"run-{n + 1}" in taken:  # a deleted run left a gap
                        n += 1
                    name = f"run-{n + 1}"
                cur = self._conn.execute(
                    "INSERT INTO runs(name, created, config, environment) VALUES (?, ?, ?, ?)",
                    (
                        name,
                        _now(),
                        json.dumps(dict(config or {}), default=str),
                        json.dumps(dict(environment or {}), default=str),
                    ),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            return int(cur.lastrowid or 0), name

    def write(self, run_id: int, batch: Batch) -> None:
        """Commit one batch in one transaction."""
        with self._lock:
            c = self._conn
            self._check_file()
            c.execute("BEGIN IMMEDIATE")
            try:
                if batch.config is not None:
                    c.execute(
                        "UPDATE runs SET config = ? WHERE id = ?",
                        (json.dumps(batch.config, default=str), run_id),
                    )
                if batch.layers is not None:
                    c.execute("DELETE FROM layers WHERE run_id = ?", (run_id,))
                    c.executemany(
                        "INSERT INTO layers(run_id, idx, name, kind, numel, trainable, activation) VALUES (?,?,?,?,?,?,?)",
                        [
                            (
                                run_id,
                                lay.index,
                                lay.name,
                                lay.kind,
                                lay.numel,
                                int(lay.trainable),
                                lay.activation,
                            )
                            for lay in batch.layers
                        ],
                    )
                rows = []
                for metric, (steps, values) in batch.metrics.items():
                    vals = np.ascontiguousarray(values, dtype="<f8")
                    for i, s in enumerate(steps):
                        rows.append((run_id, metric, int(s), vals[i].tobytes()))
                c.executemany(
                    "INSERT OR REPLACE INTO metrics(run_id, metric, step, vals) VALUES (?,?,?,?)",
                    rows,
                )
                srows = []
                for sname, (steps, values) in batch.scalars.items():
                    for s, v in zip(steps, values):
                        fv = float(v)
                        srows.append((run_id, sname, int(s), fv if not math.isnan(fv) else None))
                c.executemany(
                    "INSERT OR REPLACE INTO scalars(run_id, name, step, value) VALUES (?,?,?,?)",
                    srows,
                )
                c.executemany(
                    "INSERT INTO events(run_id, step, kind, layer, value, message, data, created) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            run_id,
                            e.step,
                            e.kind,
                            e.layer,
                            _finite_or_none(e.value),
                            e.message,
                            json.dumps(e.data, default=str),
                            _now(),
                        )
                        for e in batch.events
                    ],
                )
                c.execute("COMMIT")
            except BaseException as e:
                # SQLite may have rolled back already (disk full, I/O error): a failing ROLLBACK
                # ("no transaction is active") must not hide the error that matters
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"writing {str(self.path)!r} failed: {_meaning(e)}") from e
                raise

    def _check_file(self) -> None:
        """The store file is still the one opened: SQLite keeps writing into a deleted (or
        replaced) file's inode without an error, and everything it commits there is lost."""
        try:
            now = os.stat(self.path).st_ino
        except OSError:
            now = None
        if now != self._inode:
            raise StoreError(
                f"the store file {str(self.path)!r} was deleted or replaced while the run was "
                "being recorded; its committed steps went with it, what was not committed stays "
                "in memory (mon.run)"
            )

    def runs(self) -> list[tuple[int, str, str]]:
        """``(id, name, created)`` of every run, oldest first."""
        with self._lock:
            return [
                tuple(r)
                for r in self._conn.execute("SELECT id, name, created FROM runs ORDER BY id")
            ]  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _meaning(e: sqlite3.Error) -> str:
    """SQLite's message, with what its I/O error codes mean: a failed write is most often a full
    disk or a file-size limit (``ulimit -f``), which SQLite reports only as "disk I/O error"."""
    name = str(getattr(e, "sqlite_errorname", ""))
    if name.startswith("SQLITE_IOERR_WRITE") or name in ("SQLITE_IOERR_TRUNCATE", "SQLITE_IOERR"):
        return (
            f"{e} ({name}: a write was refused: the disk is full, a file-size limit "
            "(ulimit -f) was reached, or the device failed)"
        )
    return str(e)


def _finite_or_none(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if not math.isnan(v) else None


def _read_run(
    conn: sqlite3.Connection, path: Path, name: str | None, run_id: int | None = None
) -> Run:
    if run_id is not None:
        row = conn.execute(
            "SELECT id, name, created, config, environment FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no run with id {run_id} in {str(path)!r}")
    elif name is None:
        row = conn.execute(
            "SELECT id, name, created, config, environment FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise StoreError(
                f"store {str(path)!r} holds no runs yet; record one with gg.watch(..., store=...)"
            )
    else:
        row = conn.execute(
            "SELECT id, name, created, config, environment FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None:
            names = [r[0] for r in conn.execute("SELECT name FROM runs ORDER BY id")]
            raise StoreError(f"no run named {name!r} in {str(path)!r}; it holds {names}")
    run_id, rname, created, config, env = row
    layers = [
        Layer(index=r[0], name=r[1], kind=r[2], numel=r[3], trainable=bool(r[4]), activation=r[5])
        for r in conn.execute(
            "SELECT idx, name, kind, numel, trainable, activation FROM layers WHERE run_id = ? ORDER BY idx",
            (run_id,),
        )
    ]
    n = len(layers)
    by_metric: dict[str, tuple[list[int], list[bytes]]] = {}
    for metric, step, blob in conn.execute(
        "SELECT metric, step, vals FROM metrics WHERE run_id = ? ORDER BY metric, step", (run_id,)
    ):
        s, b = by_metric.setdefault(metric, ([], []))
        s.append(step)
        b.append(blob)
    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for metric, (s, b) in by_metric.items():
        bad = next((blob for blob in b if len(blob) != 8 * n), None)
        if bad is not None:
            raise StoreError(
                f"run {rname!r} in {str(path)!r} is damaged: its layer table has {n} rows but "
                f"{metric!r} holds {len(bad) // 8} values per step; the store was edited or "
                "truncated (record the run again, or restore the file)"
            )
        vals = np.frombuffer(b"".join(b), dtype="<f8").reshape(len(s), n).astype(np.float64)
        metrics[metric] = (np.asarray(s, dtype=np.int64), vals)
    by_scalar: dict[str, tuple[list[int], list[float]]] = {}
    for sname, step, value in conn.execute(
        "SELECT name, step, value FROM scalars WHERE run_id = ? ORDER BY name, step", (run_id,)
    ):
        s2, v2 = by_scalar.setdefault(sname, ([], []))
        s2.append(step)
        v2.append(float("nan") if value is None else value)
    scalars = {
        k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64))
        for k, (s, v) in by_scalar.items()
    }
    events = [
        Event(
            step=r[0],
            kind=r[1],
            layer=r[2],
            value=r[3],
            message=r[4],
            data=json.loads(r[5] or "{}"),
        )
        for r in conn.execute(
            "SELECT step, kind, layer, value, message, data FROM events WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
    ]
    return Run(
        rname,
        layers,
        metrics,
        scalars,
        events,
        json.loads(config or "{}"),
        json.loads(env or "{}"),
        created,
        path,
    )


def load(
    path: str | os.PathLike[str], name: str | None = None, *, run_id: int | None = None
) -> Run:
    """Read a run from a store file: the last one, the one called ``name``, or the one with ``run_id``.

    Raises:
        StoreError: the file is missing, not a gradguard store, or holds no such run.

    >>> run = load("runs/exp.db")   # doctest: +SKIP
    """
    p = store_path(path, "gg.load's path")
    conn = connect(p, create=False, read_only=True)
    try:
        # one read transaction: every SELECT sees the same snapshot, so a writer committing a
        # batch in between (its layer table, then its metrics) cannot be half seen
        conn.execute("BEGIN")
        return _read_run(conn, p, name, run_id)
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"could not read {str(p)!r} ({e}); is it a complete gradguard store?"
        ) from e
    finally:
        conn.close()


def list_runs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(name, created)`` of every run in a store, oldest first."""
    p = store_path(path, "the store path")
    conn = connect(p, create=False, read_only=True)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT name, created FROM runs ORDER BY id")]
    finally:
        conn.close()


def delete_runs(path: str | os.PathLike[str], names: Sequence[str]) -> int:
    """Delete every run called one of ``names`` (with its layers, metrics, scalars and events).

    A missing store file holds nothing to delete; ``0`` is returned.

    Returns:
        The number of runs deleted.

    >>> delete_runs("runs/exp.db", ["lr=0.1"])   # doctest: +SKIP
    1
    """
    p = store_path(path, "the store path")
    if not p.exists() or not names:
        return 0
    conn = connect(p, create=False)
    try:
        marks = ",".join("?" * len(names))
        ids = [
            r[0] for r in conn.execute(f"SELECT id FROM runs WHERE name IN ({marks})", tuple(names))
        ]
        if not ids:
            return 0
        which = ",".join("?" * len(ids))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in ("layers", "metrics", "scalars", "events"):
                conn.execute(f"DELETE FROM {table} WHERE run_id IN ({which})", ids)
            conn.execute(f"DELETE FROM runs WHERE id IN ({which})", ids)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(ids)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"could not delete runs from {str(p)!r} ({e})") from e
    finally:
        conn.close()
