"""A background thread that stores outcomes in groups, soon after they arrive, and keeps the runner's lease alive."""

from __future__ import annotations

import logging
import queue
import threading
import time

from smallab_db.execution import Outcome
from smallab_db.store import Owner, RunStore

logger = logging.getLogger("smallab_db")

FLUSH_INTERVAL_SECONDS = 0.2
MAX_GROUP = 2000
_STOP = object()


class Recorder:
    """Stores outcomes handed to :meth:`submit` within :data:`FLUSH_INTERVAL_SECONDS`, grouped in transactions.

    It also renews ``owner``'s lease every third of the lease. A database error stops it; the error is raised by
    the next :meth:`submit` or by :meth:`close`.
    """

    def __init__(self, store: RunStore, owner: Owner) -> None:
        self._store = store
        self._owner = owner
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.refused: list[int] = []
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
        group_deadline = next_renewal
        while True:
            item = self._next(min(next_renewal, group_deadline) if group else next_renewal)
            if isinstance(item, Outcome):
                if not group:
                    group_deadline = time.monotonic() + FLUSH_INTERVAL_SECONDS
                group.append(item)
            now = time.monotonic()
            try:
                if group and (item is _STOP or len(group) >= MAX_GROUP or now >= group_deadline):
                    self._store_group(group)
                    group = []
                if now >= next_renewal:
                    self._store.renew_lease(self._owner)
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
        refused = self._store.record(self._owner, group)
        if refused:
            self.refused.extend(refused)
            logger.warning(
                "smallab-db: %d result(s) not stored because another runner took over their claim "
                "(the lease had expired): run ids %s",
                len(refused),
                refused[:20],
            )
