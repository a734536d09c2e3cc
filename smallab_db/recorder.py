"""Storing outcomes in groups, soon after they arrive, and saying what became of each."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from smallab_db.errors import DatabaseError, ResultNotStoredError, TransientDatabaseError
from smallab_db.execution import failure
from smallab_db.records import Fate, Outcome, Owner, Verdict
from smallab_db.store import RunStore

logger = logging.getLogger("smallab_db")
T = TypeVar("T")

FLUSH_INTERVAL_SECONDS = 0.1  # a tenth of the promised 1 s between an experiment returning and its result stored
MAX_GROUP = 2000
CLAIM_GROUPS = 2  # a claim stores at most this many groups in its turn: the others go on being collected
MAX_GROUP_BYTES = 64 * 1024 * 1024


class Recorder:
    """Stores outcomes handed to :meth:`submit` within :data:`FLUSH_INTERVAL_SECONDS`, grouped in transactions, and
    hands the :class:`Verdict` of each group to ``on_verdicts`` once the transaction has committed.

    The runner's own thread stores a group when it submits an outcome and the group is full or its oldest outcome
    has waited :data:`FLUSH_INTERVAL_SECONDS`: the process writes from the thread that runs it, which waits on no
    other. While the runner's thread is busy with a long run, a watchdog thread stores what has waited.

    A group the database refuses is stored again one outcome at a time; an outcome it still refuses (text the
    driver cannot send, a value over a size limit) is stored as a failure with a :class:`ResultNotStoredError`
    saying why, so that only that run fails. Transient errors (a dropped connection, a busy database) are retried
    by the store; one that outlasts the retries is raised by :meth:`submit` or :meth:`close`, and the outcomes not
    stored stay claimed, to be run again.
    """

    def __init__(self, store: RunStore, owner: Owner, on_verdicts: Callable[[list[Verdict]], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_verdicts = on_verdicts
        self._queued: deque[Outcome] = deque()
        self._oldest_at = 0.0  # when the oldest queued outcome was submitted
        self._storing = threading.Lock()  # held while a group is taken off the queue and stored
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="smallab-db-recorder", daemon=True)
        self._watchdog.start()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome, and store the queue if it is due.

        Raises:
            DatabaseError: storing failed, now or in the watchdog.
        """
        self._raise_if_failed()
        now = time.monotonic()
        with self._storing:
            if not self._queued:
                self._oldest_at = now
            self._queued.append(outcome)
            if len(self._queued) >= MAX_GROUP or now - self._oldest_at >= FLUSH_INTERVAL_SECONDS:
                self._store_queued()
        self._raise_if_failed()

    def store_with(self, claim: Callable[[Callable[[], None]], T]) -> T:
        """Make a claim that stores what is queued first in its own write turn: ``claim`` calls the function it is
        given once it has the turn. The rows are made before; the verdicts are handed on after. So writers sharing
        a SQLite file wait for one turn instead of two. A group that fails there is stored again on its own after,
        where its error is handled as :meth:`submit` handles it."""
        with self._storing:
            groups = [] if self._error is not None else list(itertools.islice(iter(self._next_group, []), CLAIM_GROUPS))
            prepared: list[Callable[[], dict[int, Fate]]] = []
            written: list[dict[int, Fate]] = []

            def write_groups() -> None:
                for write in prepared:
                    try:
                        written.append(write())
                    except Exception:  # stored again below, on its own, where its error is handled
                        return

            try:
                with contextlib.suppress(Exception):  # a group whose rows cannot be made is stored below, on its own
                    for group in groups:
                        prepared.append(self._store.recording(self._owner.token, group))
                claimed = claim(write_groups)
            except BaseException:
                self._deliver(groups[: len(written)], written)
                self._queued.extendleft(reversed([outcome for group in groups[len(written) :] for outcome in group]))
                raise
            self._deliver(groups[: len(written)], written)
            self._store_groups(groups[len(written) :])
            return claimed

    def close(self) -> None:
        """Store everything queued, stop the watchdog and raise an error storing met, if any."""
        self._stopped.set()
        self._watchdog.join()
        with self._storing:
            if self._error is None:
                self._store_queued()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _watch(self) -> None:
        """Store what waited a whole interval while the runner's thread was busy elsewhere."""
        while not self._stopped.wait(FLUSH_INTERVAL_SECONDS):
            if self._queued and time.monotonic() - self._oldest_at >= FLUSH_INTERVAL_SECONDS:
                with self._storing:
                    self._store_queued()

    def _store_queued(self) -> None:
        """Store the queue in groups; with ``_storing`` held. An error is kept for the runner's thread to raise."""
        while self._error is None and (group := self._next_group()):
            self._store_groups([group])

    def _store_groups(self, groups: list[list[Outcome]]) -> None:
        """Store groups taken off the queue; with ``_storing`` held."""
        for index, group in enumerate(groups):
            if self._error is not None:
                return
            try:
                verdicts = store_group(self._store, self._owner.token, group)
            except Exception as error:  # raised in the runner's thread; what is queued stays claimed
                self._error = error
                self._queued.clear()
                return
            except BaseException:  # Ctrl-C in the middle: the groups were not stored, and close() stores them
                self._queued.extendleft(reversed([outcome for left in groups[index:] for outcome in left]))
                raise
            self._on_verdicts(verdicts)

    def _deliver(self, groups: list[list[Outcome]], not_stored: list[dict[int, Fate]]) -> None:
        """Hand on the verdicts of groups written, each with its outcomes not stored."""
        for group, refused in zip(groups, not_stored, strict=True):
            self._on_verdicts(verdicts_of(group, refused))

    def _next_group(self) -> list[Outcome]:
        """Take up to :data:`MAX_GROUP` queued outcomes (or :data:`MAX_GROUP_BYTES` of results) off the queue."""
        group: list[Outcome] = []
        group_bytes = 0
        while self._queued and len(group) < MAX_GROUP and group_bytes < MAX_GROUP_BYTES:
            outcome = self._queued.popleft()
            group.append(outcome)
            group_bytes += len(outcome.result_pickle or b"")
        return group


def store_group(store: RunStore, token: str, group: list[Outcome]) -> list[Verdict]:
    """Store a group of outcomes of runs claimed with ``token`` in one transaction and return what became of each.

    A group the database refuses is stored again one outcome at a time; an outcome it still refuses is stored as a
    failure with a :class:`ResultNotStoredError` saying why.

    Raises:
        TransientDatabaseError: the database stayed unreachable or busy for longer than the retries cover.
    """
    try:
        not_stored = store.record(token, group)
    except TransientDatabaseError:
        raise
    except DatabaseError:
        verdicts = [_store_alone(store, token, outcome) for outcome in group]
        _log_not_stored(verdicts)
        return verdicts
    return verdicts_of(group, not_stored)


def verdicts_of(group: list[Outcome], not_stored: dict[int, Fate]) -> list[Verdict]:
    """The verdicts of a group written: stored, but for the outcomes ``not_stored``."""
    verdicts = [Verdict(outcome, not_stored.get(outcome.run_id, Fate.STORED)) for outcome in group]
    if not_stored:
        _log_not_stored(verdicts)
    return verdicts


def _log_not_stored(verdicts: list[Verdict]) -> None:
    for verdict in verdicts:
        if verdict.fate in (Fate.CLAIM_LOST, Fate.DELETED):
            logger.warning(
                "smallab-db: the outcome of run %d was not stored: %s", verdict.outcome.run_id, verdict.fate.value
            )


def _store_alone(store: RunStore, token: str, outcome: Outcome) -> Verdict:
    """Store one outcome or, if the database refuses it, a failure saying why."""
    try:
        fate = store.record(token, [outcome]).get(outcome.run_id, Fate.STORED)
    except TransientDatabaseError:
        raise
    except DatabaseError as error:
        logger.error("smallab-db: the outcome of run %d cannot be stored: %s", outcome.run_id, error)
        return _store_refusal(store, token, outcome, error)
    return Verdict(outcome, fate)


def _store_refusal(store: RunStore, token: str, outcome: Outcome, error: DatabaseError) -> Verdict:
    """Store the run as failed with a :class:`ResultNotStoredError`; if even the reason's text is refused, with its
    plain ASCII form."""
    reason = ResultNotStoredError(f"the outcome of this run could not be stored, so it is marked failed: {error}")
    replacement = failure(outcome.run_id, outcome.started_at, reason, in_worker=False)
    replacement.finished_at = outcome.finished_at
    replacement.specification = outcome.specification
    try:
        not_stored = store.record(token, [replacement])
    except TransientDatabaseError:
        raise
    except DatabaseError:
        replacement.error_message = ascii(replacement.error_message)
        replacement.traceback = None
        not_stored = store.record(token, [replacement])
    return Verdict(replacement, not_stored.get(outcome.run_id, Fate.STORED_AS_FAILURE))
