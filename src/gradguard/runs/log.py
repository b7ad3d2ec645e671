"""The run log: every flushed batch of a live run, in memory and (optionally) in the store.

Without a store the whole run stays in memory. With a healthy store only what the store has not
committed yet stays, plus the first ``keep_head`` and last ``keep_tail`` rows of each series (what
online diagnosis reads): memory does not grow with the run, and :meth:`RunLog.run` reads the
committed part back. A store that fails midway loses nothing: what it did not commit is still here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradguard.record.batch import Batch, Event, Layer
from gradguard.runs.run import Run
from gradguard.runs.store import Store, load
from gradguard.runs.writer import StoreWriter

__all__ = ["RunLog"]

log = logging.getLogger("gradguard")

_Part = tuple[int | None, np.ndarray, np.ndarray]  # (store batch number or None, steps, values)


class RunLog:
    """The batches of one run, as a :class:`Run`.

    Args:
        name: the run's name.
        config: the run's configuration (replaced by a batch that carries one).
        store: where batches are committed (on a background thread), or None: memory only.
        environment: versions, device, host -- stored with the run.
        keep_head, keep_tail: rows of each series kept in memory at the start and the end of the
            run once the store holds the rest.
    """

    def __init__(
        self,
        name: str | None,
        config: Mapping[str, Any],
        *,
        store: Store | None = None,
        environment: Mapping[str, Any] | None = None,
        keep_head: int = 0,
        keep_tail: int = 0,
    ) -> None:
        self.config = dict(config)
        self.store = store
        self.keep_head, self.keep_tail = keep_head, keep_tail
        self.writer: StoreWriter | None = None
        self.run_id: int | None = None
        self.name = name or "run"
        if store is not None:
            self.run_id, self.name = store.create_run(name, self.config, dict(environment or {}))
            self.writer = StoreWriter(store, self.run_id)
        self._metrics: dict[str, list[_Part]] = {}
        self._scalars: dict[str, list[_Part]] = {}
        self._events: list[Event] = []
        self._submitted = 0  # batches handed to the writer
        self.pruned = False  # parts dropped from memory (then run() reads the store)

    @property
    def path(self) -> Path | None:
        return self.store.path if self.store is not None else None

    def append(self, batch: Batch, *, wait: bool = False) -> None:
        """Keep ``batch`` and hand it to the store (``wait``: return once committed)."""
        if batch.config is not None:
            self.config = dict(batch.config)
        to_store = self.writer is not None and not batch.empty
        seq = self._submitted if to_store else None
        for k, (s, v) in batch.metrics.items():
            self._metrics.setdefault(k, []).append((seq, s, v))
        for k, (s, v) in batch.scalars.items():
            self._scalars.setdefault(k, []).append((seq, s, v))
        self._events.extend(batch.events)
        self._prune()
        # A failed writer has reported itself once (logging + warnings) and drops batches; what it
        # did not commit stays in memory (run() stays complete).
        if to_store:
            assert self.writer is not None
            self._submitted += 1
            self.writer.submit(batch, wait=wait)

    def sync(self) -> None:
        """Return once every batch handed to the store is committed (or the store has failed)."""
        if self.writer is not None:
            self.writer.sync()

    def run(self, layers: Sequence[Layer]) -> Run:
        """Everything appended so far, as a :class:`Run` with ``layers``.

        Built from memory while memory holds all of it; once older parts live only in the store,
        the store's committed part is read back and what is not committed yet is added from memory.
        """
        metrics, scalars = self._metrics, self._scalars
        if self.pruned and self.writer is not None and self.store is not None:
            self.writer.sync()
            committed = self.writer.committed
            try:
                stored: Run | None = load(self.store.path, run_id=self.run_id)
            except Exception as e:  # the store broke after committing: say so, return memory's part
                log.error("gradguard: could not read the run back from its store (%s)", e)
                warnings.warn(
                    f"gradguard: mon.run could not read {str(self.store.path)!r} ({e}); it holds "
                    "only the steps still in memory",
                    RuntimeWarning,
                    stacklevel=3,
                )
                stored = None
            if stored is not None:
                metrics = _merge(
                    {m: stored.metric(m) for m in stored.metric_names}, self._metrics, committed
                )
                scalars = _merge(
                    {n: stored.scalar(n) for n in stored.scalar_names}, self._scalars, committed
                )

        def cat(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
            return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

        return Run(
            self.name,
            list(layers),
            {k: cat(v) for k, v in metrics.items() if v},
            {k: cat(v) for k, v in scalars.items() if v},
            list(self._events),
            dict(self.config),
            path=self.path,
        )

    def tail(self, head: int, tail: int, layers: Sequence[Layer]) -> Run:
        """The run with each series cut to its first ``head`` and last ``tail`` rows
        (:meth:`Run.bounded`).

        Only the flushed parts that hold them are concatenated, so the cost is O(head + tail +
        one flush), not O(run length). Events are left out (no online rule reads them).
        """

        def cut(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
            first, last = _ends(parts, head, tail)
            keep = parts[:first] + parts[last:]
            return np.concatenate([p[1] for p in keep]), np.concatenate([p[2] for p in keep])

        return Run(
            self.name,
            list(layers),
            {k: cut(v) for k, v in self._metrics.items() if v},
            {k: cut(v) for k, v in self._scalars.items() if v},
            [],
            dict(self.config),
            path=self.path,
        ).bounded(head, tail)

    def memory_rows(self) -> int:
        """The most rows any per-layer series keeps in memory (bounded with a healthy store)."""
        return max((sum(len(p[1]) for p in parts) for parts in self._metrics.values()), default=0)

    def close(self) -> None:
        """Wait for the store to commit everything, then close it."""
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            if self.store is not None:
                self.store.close()

    def _prune(self) -> None:
        """Drop the parts the store has committed, but for the first and last parts of each series
        (what :meth:`tail` reads). Nothing uncommitted is dropped."""
        w = self.writer
        if w is None or w.failed is not None:
            return
        committed = w.committed
        for series in (self._metrics, self._scalars):
            for k, parts in series.items():
                first, last = _ends(parts, self.keep_head, self.keep_tail)
                kept = [
                    p
                    for i, p in enumerate(parts)
                    if i < first or i >= last or p[0] is None or p[0] >= committed
                ]
                if len(kept) < len(parts):
                    series[k] = kept
                    self.pruned = True


def _ends(parts: list[_Part], head: int, tail: int) -> tuple[int, int]:
    """``(first, last)``: parts ``[:first]`` hold the first ``head`` rows (at least), parts
    ``[last:]`` the last ``tail`` rows, ``first <= last``."""
    first, n = 0, 0
    while first < len(parts) and n < head:
        n += len(parts[first][1])
        first += 1
    last, n = len(parts), 0
    while last > first and n < tail:
        last -= 1
        n += len(parts[last][1])
    return first, last


def _merge(
    stored: Mapping[str, tuple[np.ndarray, np.ndarray]],
    memory: Mapping[str, list[_Part]],
    committed: int,
) -> dict[str, list[_Part]]:
    """Series made of the store's committed rows and memory's parts the store does not hold."""
    out: dict[str, list[_Part]] = {k: [(None, s, v)] for k, (s, v) in stored.items()}
    for k, parts in memory.items():
        out.setdefault(k, []).extend(p for p in parts if p[0] is None or p[0] >= committed)
    for k, parts in out.items():  # in step order
        steps = np.concatenate([p[1] for p in parts])
        order = np.argsort(steps, kind="stable")
        out[k] = [(None, steps[order], np.concatenate([p[2] for p in parts])[order])]
    return out
