"""A background thread that stores outcomes in groups, soon after they arrive, and keeps the runner's lease alive."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from smallab_db.errors import DatabaseError, ResultNotStoredError
from smallab_db.execution import Outcome, failure
from smallab_db.store import Owner, RunStore

logger = logging.getLogger("smallab_db")

FLUSH_INTERVAL_SECONDS = 0.2
MAX_GROUP = 2000
MAX_GROUP_BYTES = 64 * 1024 * 1024
_STOP = object()


class Recorder:
    """Stores outcomes handed to :meth:`submit` within :data:`FLUSH_INTERVAL_SECONDS`, grouped in transactions.

    A group the database refuses is stored again one outcome at a time, and an outcome that still cannot be stored
    (say a result over the database's size limit) is stored as a failure saying why. Every third of the lease it
    renews ``owner``'s lease and tells ``on_renewal`` which claims are still held. A database error that even this
    cannot get past stops the thread; the error is raised by the next :meth:`submit` or by :meth:`close`, and the
    outcomes not stored yet stay claimed, to be run again.
    """

    def __init__(self, store: RunStore, owner: Owner, on_renewal: Callable[[set[int]], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_renewal = on_renewal
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.refused: list[int] = []  # their claim was lost: another runner stores them
        self.stored_as_failure: dict[int, BaseException] = {}  # the database refused their result
        self._thread = threading.Thread(target=self._work, name="smallab-db-recorder", daemon=True)
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome to be stored.

        Raises:
            DatabaseError: an earlier group could not be stored.
        """
        self._raise_if_failed()
        self._queue.put(outcome)

    def close(self) -> None:
        """Store everything queued, stop the thread and raise its error, if any."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        renew_every = self._owner.lease_seconds / 3
        next_renewal = time.monotonic() + renew_every
        group: list[Outcome] = []
        group_bytes = 0
        group_deadline = next_renewal
        while True:
            item = self._next(min(next_renewal, group_deadline) if group else next_renewal)
            if isinstance(item, Outcome):
                if not group:
                    group_deadline = time.monotonic() + FLUSH_INTERVAL_SECONDS
                group.append(item)
                group_bytes += len(item.result_pickle or b"")
            now = time.monotonic()
            full = len(group) >= MAX_GROUP or group_bytes >= MAX_GROUP_BYTES
            try:
                if group and (item is _STOP or full or now >= group_deadline):
                    self._store_group(group)
                    group, group_bytes = [], 0
                if now >= next_renewal:
                    self._on_renewal(self._store.renew_lease(self._owner))
                    next_renewal = now + renew_every
            except BaseException as error:  # handed to the runner's thread, which raises it
                self._error = error
                return
            if item is _STOP:
                return

    def _next(self, deadline: float) -> object | None:
        """Return the next queued item, or None once ``deadline`` has passed."""
        try:
            return self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def _store_group(self, group: list[Outcome]) -> None:
        try:
            refused = self._store.record(self._owner, group)
        except DatabaseError:
            refused = [run_id for outcome in group for run_id in self._store_alone(outcome)]
        if refused:
            self.refused.extend(refused)
            logger.warning(
                "smallab-db: %d result(s) not stored because another runner took over their claim "
                "(the lease had expired): run ids %s",
                len(refused),
                refused[:20],
            )

    def _store_alone(self, outcome: Outcome) -> list[int]:
        """Store one outcome, or if the database refuses it, a failure saying why; return the refused ids."""
        try:
            return self._store.record(self._owner, [outcome])
        except DatabaseError as error:
            logger.error("smallab-db: the outcome of run %d cannot be stored: %s", outcome.run_id, error)
            reason = ResultNotStoredError(
                f"the outcome of this run could not be stored, so it is marked failed: {error}"
            )
            replacement = failure(outcome.run_id, outcome.started_at, reason, in_worker=False)
            replacement.finished_at = outcome.finished_at or datetime.now(UTC)
            self.stored_as_failure[outcome.run_id] = reason
            return self._store.record(self._owner, [replacement])
