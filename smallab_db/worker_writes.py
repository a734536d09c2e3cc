"""What a worker writes to the database while its run goes on: progress, checkpoints, the runs an
overlapping-output experiment produces on the way, and the run's output so far (:mod:`smallab_db.live_output`);
and, in a joblib pool, the outcomes of the short runs it executed.

Why workers write at all: a checkpoint must outlive the worker that made it (a killed process, a crashed machine),
and the runner that resumes the run, on any machine sharing the database, must find it there; an output run must be
stored before the checkpoint that moves past it, or a resumed run would never produce it again.

How it stays safe: every write is one transaction of :class:`~smallab_db.store.RunStore` that first checks, as a
compare-and-set on the row, that the run is still ``running`` under the claim token the calling process claimed
it with, and locks the row until it commits. A worker whose claim was lost (another runner took the run over after
the lease lapsed, or the batch was deleted) therefore writes nothing, and its run stops with
:class:`~smallab_db.errors.ClaimLostError`. A worker of a joblib pool stores the outcomes of a chunk of
short runs it executed in the same way (see :func:`smallab_db.joblib_dispatch.execute_chunk`), so that the calling
process spends little per run; elsewhere the calling process stores them, through the recorder.

Each worker process opens one engine per database, lazily, at its first write; a forked child drops the engines it
inherited. In the calling process (serial and threaded runs) the runner's own store is used, so that its writes
take turns with the runner's on one lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL

from smallab_db.database import create_engine
from smallab_db.errors import ClaimLostError
from smallab_db.records import ImportedRun
from smallab_db.store import RunStore

_stores: dict[tuple[Any, ...], RunStore] = {}  # by _key of the database URL
_stores_pid = os.getpid()
_stores_lock = threading.Lock()


def share_store(database: URL, store: RunStore) -> None:
    """Let runs executed in this process write through ``store``, the runner's own, for ``database``."""
    with _stores_lock:
        _forget_inherited()
        _stores[_key(database)] = store


def unshare_store(database: URL, store: RunStore) -> None:
    """Stop using ``store`` (its runner is closing)."""
    with _stores_lock:
        if _stores.get(_key(database)) is store:
            del _stores[_key(database)]


def store_for(database: URL) -> RunStore:
    """The store runs executed in this process write through: the runner's own if it shared it, else one engine
    per database, opened at the first write."""
    with _stores_lock:
        _forget_inherited()
        store = _stores.get(_key(database))
        if store is None:
            store = _stores[_key(database)] = RunStore(create_engine(database))
        return store


def _key(database: URL) -> tuple[Any, ...]:
    """The URL's parts: a URL hashes by its text, which a SQLite path that is not UTF-8 cannot be turned into."""
    return (*database[:6], tuple(database.query.items()))


def _forget_inherited() -> None:
    """In a forked child, drop the parent's stores without closing its connections, which the parent still uses."""
    global _stores_pid
    if _stores_pid != os.getpid():
        for store in _stores.values():
            store.engine.dispose(close=False)
        _stores.clear()
        _stores_pid = os.getpid()


@dataclass(frozen=True)
class RunLink:
    """A worker's link to the database for one claimed run; it travels to the worker with the task.

    Attributes:
        database: the database URL, with its password (the worker connects with it).
        run_id: the run.
        token: the claim token the calling process claimed the run with.
    """

    database: URL
    run_id: int
    token: str

    def report_progress(self, progress: float, total: float | None) -> None:
        """Store the run's progress.

        Raises:
            ClaimLostError: the claim is no longer held; nothing was written.
        """
        self._held(store_for(self.database).report_progress(self.run_id, self.token, progress, total))

    def save_checkpoint(self, state: bytes, keep: int) -> None:
        """Store a checkpoint, keeping the ``keep`` newest.

        Raises:
            ClaimLostError: the claim is no longer held; nothing was written.
        """
        self._held(store_for(self.database).save_checkpoint(self.run_id, self.token, state, keep))

    def store_outputs(self, produced: Sequence[ImportedRun]) -> None:
        """Store runs the run produced on the way as completed runs of its batch.

        Raises:
            ClaimLostError: the claim is no longer held; nothing was written.
        """
        self._held(store_for(self.database).store_outputs(self.run_id, self.token, produced))

    def write_output(self, output: str | None) -> bool:
        """Store the run's output so far; return whether the claim is still held (if not, nothing was written)."""
        return store_for(self.database).write_output(self.run_id, self.token, output)

    def checkpoint_states(self) -> list[bytes]:
        """Return the run's checkpoints, newest first."""
        return store_for(self.database).checkpoint_states(self.run_id)

    def _held(self, held: bool) -> None:
        if not held:
            raise ClaimLostError(
                f"run {self.run_id} was taken over by another runner (its lease had lapsed) or deleted while it ran; "
                "this execution stopped without writing anything more, and the other runner's outcome counts"
            )


LinkOf = Callable[[int], RunLink]  # the link of a claimed run, from its id: what dispatching hands each run
