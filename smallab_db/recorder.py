"""A background thread that stores outcomes in groups, soon after they arrive, and says what became of each."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from smallab_db.errors import DatabaseError, ResultNotStoredError, TransientDatabaseError
from smallab_db.execution import failure
from smallab_db.records import Fate, Outcome, Owner, Verdict
from smallab_db.store import RunStore

logger = logging.getLogger("smallab_db")

FLUSH_INTERVAL_SECONDS = 0.1  # a tenth of the promised 1 s between an experiment returning and its result stored
MAX_GROUP = 2000
MAX_GROUP_BYTES = 64 * 1024 * 1024
MAX_QUEUED = 10_000  # outcomes waiting to be stored; beyond this, submit waits (memory stays flat)
_STOP = object()


class Recorder:
    """Stores outcomes handed to :meth:`submit` within :data:`FLUSH_INTERVAL_SECONDS`, grouped in transactions, and
    hands a :class:`Verdict` for each to ``on_verdict``, from its own thread, once the transaction has committed.

    A group the database refuses is stored again one outcome at a time; an outcome it still refuses (text the
    driver cannot send, a value over a size limit) is stored as a failure with a :class:`ResultNotStoredError`
    saying why, so that only that run fails. Transient errors (a dropped connection, a busy database) are retried
    by the store; one that outlasts the retries stops the thread, and the next :meth:`submit` or :meth:`close`
    raises it. The outcomes not stored then stay claimed, to be run again.
    """

    def __init__(self, store: RunStore, owner: Owner, on_verdict: Callable[[Verdict], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_verdict = on_verdict
        self._queue: queue.Queue[object] = queue.Queue(MAX_QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="smallab-db-recorder", daemon=True)
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome to be stored.

        Raises:
            DatabaseError: an earlier group could not be stored.
        """
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(outcome, timeout=1.0)
                return
            except queue.Full:  # the database is slower than the experiments: wait, unless the thread died
                self._raise_if_failed()

    def close(self) -> None:
        """Store everything queued, stop the thread and raise its error, if any."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        group: list[Outcome] = []
        group_bytes = 0
        deadline = 0.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()) if group else None)
            except queue.Empty:
                item = None
            if isinstance(item, Outcome):
                if not group:
                    deadline = time.monotonic() + FLUSH_INTERVAL_SECONDS
                group.append(item)
                group_bytes += len(item.result_pickle or b"")
            full = len(group) >= MAX_GROUP or group_bytes >= MAX_GROUP_BYTES
            if group and (item is _STOP or full or time.monotonic() >= deadline):
                try:
                    self._store_group(group)
                except BaseException as error:  # handed to the runner's thread, which raises it
                    self._error = error
                    self._drain()
                    return
                group, group_bytes = [], 0
            if item is _STOP:
                return

    def _drain(self) -> None:
        """Empty the queue after a fatal error, so that a :meth:`submit` waiting for room gets to raise it."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _store_group(self, group: list[Outcome]) -> None:
        try:
            not_stored = self._store.record(self._owner, group)
        except TransientDatabaseError:
            raise
        except DatabaseError:
            for outcome in group:
                self._store_alone(outcome)
            return
        for outcome in group:
            self._deliver(outcome, not_stored.get(outcome.run_id, Fate.STORED))

    def _store_alone(self, outcome: Outcome) -> None:
        """Store one outcome or, if the database refuses it, a failure saying why."""
        try:
            fate = self._store.record(self._owner, [outcome]).get(outcome.run_id, Fate.STORED)
        except TransientDatabaseError:
            raise
        except DatabaseError as error:
            logger.error("smallab-db: the outcome of run %d cannot be stored: %s", outcome.run_id, error)
            self._store_refusal(outcome, error)
            return
        self._deliver(outcome, fate)

    def _store_refusal(self, outcome: Outcome, error: DatabaseError) -> None:
        """Store the run as failed with a :class:`ResultNotStoredError`; if even the reason's text is refused, with
        its plain ASCII form."""
        reason = ResultNotStoredError(f"the outcome of this run could not be stored, so it is marked failed: {error}")
        replacement = failure(outcome.run_id, outcome.started_at, reason, in_worker=False)
        replacement.finished_at = outcome.finished_at
        replacement.specification = outcome.specification
        try:
            not_stored = self._store.record(self._owner, [replacement])
        except TransientDatabaseError:
            raise
        except DatabaseError:
            replacement.error_message = ascii(replacement.error_message)
            replacement.traceback = None
            not_stored = self._store.record(self._owner, [replacement])
        self._deliver(replacement, not_stored.get(outcome.run_id, Fate.STORED_AS_FAILURE))

    def _deliver(self, outcome: Outcome, fate: Fate) -> None:
        if fate in (Fate.CLAIM_LOST, Fate.DELETED):
            logger.warning("smallab-db: the outcome of run %d was not stored: %s", outcome.run_id, fate.value)
        self._on_verdict(Verdict(outcome, fate))
