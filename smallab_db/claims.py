"""Handing out claimed runs one at a time, claiming more from the database in chunks sized to the work's pace."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from smallab_db.experiment import Specification
from smallab_db.records import Owner
from smallab_db.store import RunStore

# A chunk holds about this many seconds of work, so that runners sharing a batch split it evenly.
CLAIM_SECONDS = 0.25
MAX_CLAIM = 1000


class Claims:
    """An iterator over ``(run_id, specification)`` of runs claimed for ``owner``, safe across threads.

    Runs it hands out stay "in flight" until :meth:`finish`; :meth:`release` returns in-flight and unhanded
    claims to pending. Before handing out a claimed run it makes sure the claim was confirmed (taken or renewed)
    within the last two thirds of the lease, renewing it through ``renew`` if not, so that after a stall (a
    suspended machine) it never starts a run another runner has reclaimed meanwhile.
    """

    def __init__(
        self, store: RunStore, batch_id: int, owner: Owner, parallelism: int, renew: Callable[[], set[int]]
    ) -> None:
        self._store = store
        self._batch_id = batch_id
        self._owner = owner
        self._renew = renew
        self._min_chunk = max(1, parallelism)
        self._buffer: deque[tuple[int, Specification]] = deque()
        self._in_flight: dict[int, Specification] = {}
        self._handed_out = 0
        self._started = time.monotonic()
        self._confirmed_at = self._started
        self._lock = threading.Lock()  # guards the buffer and the runs in flight, for a moment each time
        self._taking = threading.Lock()  # held while a run is taken, claiming or renewing first if need be

    def __iter__(self) -> Iterator[tuple[int, Specification]]:
        while True:
            with self._taking:  # finishing runs meanwhile waits for no claim or renewal
                if self._buffer and time.monotonic() - self._confirmed_at > self._owner.lease_seconds * 2 / 3:
                    self.retain(self._renew())
                if not self._buffer:
                    claimed = self._claim_more()
                    with self._lock:
                        self._buffer.extend(claimed)
                        self._confirmed_at = time.monotonic()
                with self._lock:
                    if not self._buffer:
                        return
                    run_id, specification = self._buffer.popleft()
                    self._in_flight[run_id] = specification
                    self._handed_out += 1
            yield run_id, specification

    def finish(self, run_id: int) -> Specification:
        """Mark a handed-out run as finished and return its specification."""
        with self._lock:
            return self._in_flight.pop(run_id)

    def in_flight(self) -> list[tuple[int, Specification]]:
        """Return the runs handed out and not finished yet."""
        with self._lock:
            return list(self._in_flight.items())

    def retain(self, held: set[int]) -> None:
        """Forget claimed runs not handed out yet whose claim was lost (the lease lapsed and another runner took
        them), so that they are not executed twice."""
        with self._lock:
            self._keep_held(held)

    def _keep_held(self, held: set[int]) -> None:
        self._buffer = deque(pair for pair in self._buffer if pair[0] in held)
        self._confirmed_at = time.monotonic()

    def release(self) -> int:
        """Return every unfinished claim to pending, those never handed out without counting an execution.

        Returns:
            How many of them this object did not know of: claims whose taking committed although the connection
            dropped before saying so (the claim was then taken again). They are pending again, to be run.
        """
        with self._taking, self._lock:
            unstarted = [run_id for run_id, _ in self._buffer]
            known = len(unstarted) + len(self._in_flight)
            self._in_flight.clear()
            self._buffer.clear()
        return self._store.release(self._owner, unstarted) - known

    def _claim_more(self) -> list[tuple[int, Specification]]:
        claimed = self._store.claim(self._batch_id, self._owner, self._chunk_size())
        if not claimed and self._store.reclaim_abandoned(self._batch_id, self._owner):
            claimed = self._store.claim(self._batch_id, self._owner, self._chunk_size())
        return claimed

    def _chunk_size(self) -> int:
        """About :data:`CLAIM_SECONDS` of work at the pace runs were taken so far, and at most twice the runs taken
        so far: a few runs taken in the first milliseconds say little of the pace, so chunks grow step by step."""
        rate = self._handed_out / max(time.monotonic() - self._started, 1e-3)
        return max(self._min_chunk, min(MAX_CLAIM, 2 * self._handed_out, int(rate * CLAIM_SECONDS)))
