"""A background thread that stores outcomes in groups, soon after they arrive, and says what became of each."""

from __future__ import annotations

import logging
import threading
from collections import deque
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


class Recorder:
    """Stores outcomes handed to :meth:`submit` within :data:`FLUSH_INTERVAL_SECONDS`, grouped in transactions, and
    hands the :class:`Verdict` of each group to ``on_verdicts``, from its own thread, once the transaction has
    committed.

    Submitting only appends to a queue that the recorder's thread empties every :data:`FLUSH_INTERVAL_SECONDS`
    (sooner when a group is full), so handing over an outcome costs the runner almost nothing.

    A group the database refuses is stored again one outcome at a time; an outcome it still refuses (text the
    driver cannot send, a value over a size limit) is stored as a failure with a :class:`ResultNotStoredError`
    saying why, so that only that run fails. Transient errors (a dropped connection, a busy database) are retried
    by the store; one that outlasts the retries stops the thread, and the next :meth:`submit` or :meth:`close`
    raises it. The outcomes not stored then stay claimed, to be run again.
    """

    def __init__(self, store: RunStore, owner: Owner, on_verdicts: Callable[[list[Verdict]], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_verdicts = on_verdicts
        self._queued: deque[Outcome] = deque()  # append and popleft are atomic: no lock between the two threads
        self._wake = threading.Event()  # set when a group is full, or to stop
        self._drained = threading.Event()  # set whenever the thread has taken outcomes from the queue
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="smallab-db-recorder", daemon=True)
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome to be stored.

        Raises:
            DatabaseError: an earlier group could not be stored.
        """
        self._raise_if_failed()
        while len(self._queued) >= MAX_QUEUED:  # the database is slower than the experiments: wait for room
            self._drained.clear()
            self._wake.set()
            self._drained.wait(1.0)
            self._raise_if_failed()
        self._queued.append(outcome)
        if len(self._queued) >= MAX_GROUP:
            self._wake.set()

    def close(self) -> None:
        """Store everything queued, stop the thread and raise its error, if any."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            stopping = self._stopping  # read before draining: all that was queued before close() is stored
            while group := self._next_group():
                try:
                    self._store_group(group)
                except BaseException as error:  # handed to the runner's thread, which raises it
                    self._error = error
                    self._queued.clear()
                    self._drained.set()
                    return
            if stopping:
                return

    def _next_group(self) -> list[Outcome]:
        """Take up to :data:`MAX_GROUP` queued outcomes (or :data:`MAX_GROUP_BYTES` of results) off the queue."""
        group: list[Outcome] = []
        group_bytes = 0
        while self._queued and len(group) < MAX_GROUP and group_bytes < MAX_GROUP_BYTES:
            outcome = self._queued.popleft()
            group.append(outcome)
            group_bytes += len(outcome.result_pickle or b"")
        if group:
            self._drained.set()
        return group

    def _store_group(self, group: list[Outcome]) -> None:
        try:
            not_stored = self._store.record(self._owner, group)
        except TransientDatabaseError:
            raise
        except DatabaseError:
            self._deliver([self._store_alone(outcome) for outcome in group])
            return
        self._deliver([Verdict(outcome, not_stored.get(outcome.run_id, Fate.STORED)) for outcome in group])

    def _store_alone(self, outcome: Outcome) -> Verdict:
        """Store one outcome or, if the database refuses it, a failure saying why."""
        try:
            fate = self._store.record(self._owner, [outcome]).get(outcome.run_id, Fate.STORED)
        except TransientDatabaseError:
            raise
        except DatabaseError as error:
            logger.error("smallab-db: the outcome of run %d cannot be stored: %s", outcome.run_id, error)
            return self._store_refusal(outcome, error)
        return Verdict(outcome, fate)

    def _store_refusal(self, outcome: Outcome, error: DatabaseError) -> Verdict:
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
        return Verdict(replacement, not_stored.get(outcome.run_id, Fate.STORED_AS_FAILURE))

    def _deliver(self, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            if verdict.fate in (Fate.CLAIM_LOST, Fate.DELETED):
                logger.warning(
                    "smallab-db: the outcome of run %d was not stored: %s", verdict.outcome.run_id, verdict.fate.value
                )
        self._on_verdicts(verdicts)
