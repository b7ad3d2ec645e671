"""The store's background writer: commits batches off the training thread."""

from __future__ import annotations

import logging
import queue
import threading
import warnings

from gradguard.record.batch import Batch
from gradguard.runs.store import Store

__all__ = ["StoreWriter"]

log = logging.getLogger("gradguard")

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
