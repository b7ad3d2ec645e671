"""The run store: one SQLite file (WAL mode) holding one or more runs.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    runs(id, name, created, config JSON, environment JSON)
    layers(run_id, idx, name, kind, numel, trainable, activation)      -- idx = forward order
    metrics(run_id, metric, step, vals BLOB)   -- one row per (metric, step): float64[L] in layer order
    scalars(run_id, name, step, value)
    events(run_id, step, kind, layer, value, message, data JSON, created)

Per-layer values are stored as one little-endian float64 blob per metric and step, so a metric of a
run reads back as one ``[steps, layers]`` array without a pivot. Writes are batched: the Monitor
hands a whole flush to :class:`StoreWriter`, which commits it in one transaction on a background
thread. A committed transaction survives a ``kill -9`` of the training process (WAL,
``synchronous=NORMAL``).

>>> run = load("runs/exp.db")                 # doctest: +SKIP
>>> steps, values = run.metric("grad_norm")   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradguard.errors import StoreError

__all__ = [
    "Layer",
    "Event",
    "Run",
    "Store",
    "StoreWriter",
    "load",
    "list_runs",
    "delete_runs",
    "SCHEMA_VERSION",
]

log = logging.getLogger("gradguard")

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


@dataclass(frozen=True)
class Layer:
    """A layer as recorded: position in forward order, qualified name, class, size."""

    index: int
    name: str
    kind: str = ""
    numel: int = 0
    trainable: bool = True
    activation: str | None = None  # class name of the activation module that follows it, if seen


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: a finding, a skipped step, a clip, a store problem..."""

    step: int | None
    kind: str
    layer: str | None = None
    value: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open (or create) a store file and check that it is one."""
    path = Path(path)
    if create:
        parent = path.resolve().parent
        if not parent.is_dir():
            raise StoreError(
                f"cannot create store {str(path)!r}: directory {str(parent)!r} does not exist; "
                "create it first (mkdir -p) or pass another path"
            )
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


class Store:
    """A gradguard store file: create runs, write batches, read runs back.

    Args:
        path: the SQLite file; created (with its tables) if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path, create=True)
        self._lock = threading.Lock()

    def create_run(
        self,
        name: str | None,
        config: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> tuple[int, str]:
        """Insert a run and return ``(run_id, name)``; a missing name becomes ``run-N``."""
        with self._lock:
            if name is None:
                n = self._conn.execute("SELECT count(*) FROM runs").fetchone()[0]
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
            return int(cur.lastrowid or 0), name

    def write(self, run_id: int, batch: Batch) -> None:
        """Commit one batch in one transaction."""
        with self._lock:
            c = self._conn
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
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def runs(self) -> list[tuple[int, str, str]]:
        """``(id, name, created)`` of every run, oldest first."""
        with self._lock:
            return [
                tuple(r)
                for r in self._conn.execute("SELECT id, name, created FROM runs ORDER BY id")
            ]  # type: ignore[misc]

    def load(self, name: str | None = None) -> Run:
        with self._lock:
            return _read_run(self._conn, self.path, name)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _finite_or_none(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if not math.isnan(v) else None


@dataclass
class Batch:
    """What one flush hands to the store: per-layer metrics, scalars, events, maybe the layer table."""

    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # name -> ([S], [S, L])
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )  # name -> ([S], [S])
    events: list[Event] = field(default_factory=list)
    layers: list[Layer] | None = None
    config: dict[str, Any] | None = None  # the run's config, replaced (learned after watch())


_SYNC = Batch()  # queued by StoreWriter.sync(): written by nobody, only waited for


class StoreWriter:
    """Writes batches on a background thread, off the training loop.

    ``submit(batch)`` returns at once; ``submit(batch, wait=True)`` returns once it is committed.
    A failing write is reported once (logging + warnings), then the writer disables itself and
    drops further batches: the training being watched goes on.
    """

    def __init__(self, store: Store, run_id: int) -> None:
        self.store = store
        self.run_id = run_id
        self.failed: BaseException | None = None
        self.committed = 0  # batches committed so far (they are written in submission order)
        self._reported = False
        self._q: queue.Queue[tuple[Batch | None, threading.Event | None]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gradguard-store", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            batch, done = self._q.get()
            try:
                if batch is not None and batch is not _SYNC and self.failed is None:
                    self.store.write(self.run_id, batch)
                    self.committed += 1
            except BaseException as e:  # reported once, never raised into the training loop
                self.failed = e  # reported by the submitting thread: see _report
            finally:
                if done is not None:
                    done.set()
            if batch is None:
                return

    def submit(self, batch: Batch, *, wait: bool = False) -> None:
        if self.failed is not None:
            self._report()
            return
        done = threading.Event() if wait else None
        self._q.put((batch, done))
        if done is not None:
            done.wait()
            self._report()

    def sync(self) -> None:
        """Return once every batch submitted so far is committed (or the writer has failed)."""
        if self._thread.is_alive():
            done = threading.Event()
            self._q.put((_SYNC, done))
            done.wait()

    def close(self) -> None:
        if self._thread.is_alive():
            done = threading.Event()
            self._q.put((None, done))
            done.wait(timeout=60)
            self._thread.join(timeout=60)
        self._report()

    def _report(self) -> None:
        """Report a failed write once, from the thread that submits (the training thread):
        a warning raised on the writer thread is lost whenever the training thread happens to
        be inside ``warnings.catch_warnings()`` (numpy, torch and diagnosis all use it)."""
        if self.failed is None or self._reported:
            return
        self._reported = True
        msg = (
            f"gradguard: writing the store {str(self.store.path)!r} failed ({self.failed}); "
            "recording to it is disabled"
        )
        log.error(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


class Run:
    """One recorded run, read into memory.

    Attributes:
        name: the run's name.
        layers: list of :class:`Layer`, in forward order (the column order of every metric).
        events: list of :class:`Event`, in recording order.
        config: the watch configuration and user options recorded with the run.
        environment: versions, device, host.
    """

    def __init__(
        self,
        name: str,
        layers: Sequence[Layer],
        metrics: Mapping[str, tuple[np.ndarray, np.ndarray]],
        scalars: Mapping[str, tuple[np.ndarray, np.ndarray]],
        events: Sequence[Event] = (),
        config: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        created: str = "",
        path: Path | None = None,
    ) -> None:
        self.name = name
        self.layers = list(layers)
        self._metrics = dict(metrics)
        self._scalars = dict(scalars)
        self.events = list(events)
        self.config = dict(config or {})
        self.environment = dict(environment or {})
        self.created = created
        self.path = path

    @classmethod
    def from_arrays(
        cls,
        *,
        name: str = "run",
        layers: Sequence[str | Layer],
        metrics: Mapping[str, tuple[Any, Any]] | None = None,
        scalars: Mapping[str, tuple[Any, Any]] | None = None,
        events: Sequence[Event] = (),
        config: Mapping[str, Any] | None = None,
    ) -> Run:
        """Build a run in memory (tests, synthetic statistics, other tools' logs).

        >>> run = Run.from_arrays(layers=["fc1", "fc2"], metrics={"grad_norm": ([0, 1], [[1.0, 2.0], [1.5, 2.5]])})
        >>> run.metric("grad_norm")[1].shape
        (2, 2)
        """
        lays = [
            lay if isinstance(lay, Layer) else Layer(index=i, name=str(lay))
            for i, lay in enumerate(layers)
        ]
        n = len(lays)
        ms: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (s, v) in (metrics or {}).items():
            steps = np.asarray(s, dtype=np.int64).reshape(-1)
            vals = np.asarray(v, dtype=np.float64).reshape(len(steps), n)
            ms[k] = (steps, vals)
        ss: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (s, v) in (scalars or {}).items():
            steps = np.asarray(s, dtype=np.int64).reshape(-1)
            ss[k] = (steps, np.asarray(v, dtype=np.float64).reshape(len(steps)))
        return cls(name, lays, ms, ss, events, config)

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    @property
    def metric_names(self) -> list[str]:
        return sorted(self._metrics)

    @property
    def scalar_names(self) -> list[str]:
        return sorted(self._scalars)

    @property
    def steps(self) -> np.ndarray:
        """Every step with a per-layer record, sorted."""
        if not self._metrics:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([s for s, _ in self._metrics.values()]))

    def has_metric(self, name: str) -> bool:
        return name in self._metrics and len(self._metrics[name][0]) > 0

    def metric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], values [S, L])`` of a per-layer metric; NaN where a layer had no value.

        An unknown name gives empty arrays (``[0]``, ``[0, L]``), so rules can ask freely.
        """
        if name not in self._metrics:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.layers)))
        return self._metrics[name]

    def scalar(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [S], values [S])`` of a scalar; empty arrays when it was never logged."""
        if name not in self._scalars:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return self._scalars[name]

    def to_pandas(self) -> Any:
        """Long tables: ``(metrics, scalars)`` DataFrames (step, layer, metric, value) and (step, name, value)."""
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise StoreError("Run.to_pandas() needs pandas: pip install 'gradguard[pandas]'") from e
        names = np.array(self.layer_names, dtype=object)
        frames = []
        for m, (steps, vals) in self._metrics.items():
            if len(steps) == 0:
                continue
            frames.append(
                pd.DataFrame(
                    {
                        "step": np.repeat(steps, len(names)),
                        "layer": np.tile(names, len(steps)),
                        "metric": m,
                        "value": vals.reshape(-1),
                    }
                )
            )
        metrics = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["step", "layer", "metric", "value"])
        )
        sframes = [
            pd.DataFrame({"step": s, "name": k, "value": v}) for k, (s, v) in self._scalars.items()
        ]
        scalars = (
            pd.concat(sframes, ignore_index=True)
            if sframes
            else pd.DataFrame(columns=["step", "name", "value"])
        )
        return metrics, scalars

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, layers={len(self.layers)}, steps={len(self.steps)}, events={len(self.events)})"


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
    p = Path(path)
    conn = _connect(p, create=False)
    try:
        return _read_run(conn, p, name, run_id)
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"could not read {str(p)!r} ({e}); is it a complete gradguard store?"
        ) from e
    finally:
        conn.close()


def list_runs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(name, created)`` of every run in a store, oldest first."""
    p = Path(path)
    conn = _connect(p, create=False)
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
    p = Path(path)
    if not p.exists() or not names:
        return 0
    conn = _connect(p, create=False)
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
