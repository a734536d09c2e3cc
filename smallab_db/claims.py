"""Handing out claimed runs one at a time, claiming more from the database in chunks sized to the work's pace."""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from smallab_db.core_slots import SHORT_RUN_SECONDS, CoreSlots
from smallab_db.experiment import Specification
from smallab_db.records import Owner
from smallab_db.store import RunStore

Claimed = list[tuple[int, Specification]]

# A chunk holds about this many seconds of work, so that runners sharing a batch split it evenly.
CLAIM_SECONDS = 0.25
MAX_CLAIM = 1000
CLAIM_GROWTH = 8  # a chunk holds at most this many times the runs taken so far
LEAST_SHARE_SECONDS = 0.005  # near a batch's end, runners share what is left, but claim at least this much work


class Claims:
    """An iterator over ``(run_id, specification)`` of runs claimed for ``owner``, safe across threads.

    Runs it hands out stay "in flight" until :meth:`finish`; :meth:`release` returns in-flight and unhanded
    claims to pending. Before handing out a claimed run it makes sure the claim was confirmed (taken or renewed)
    within the last two thirds of the lease, renewing it through ``renew`` if not, so that after a stall (a
    suspended machine) it never starts a run another runner has reclaimed meanwhile. With ``slots``, while runs are
    short it claims only holding a core slot (see :mod:`smallab_db.core_slots`).
    """

    def __init__(
        self,
        store: RunStore,
        batch_id: int,
        owner: Owner,
        parallelism: int,
        renew: Callable[[], set[int]],
        claim_with: Callable[[Callable[[Callable[[], None]], Claimed]], Claimed] = lambda claim: claim(lambda: None),
        slots: CoreSlots | None = None,
    ) -> None:
        self._store = store
        self._claim_with = claim_with  # makes each claim: a recorder stores what it holds in the claim's write turn
        self._batch_id = batch_id
        self._owner = owner
        self._renew = renew
        self._slots = slots
        self._min_chunk = max(1, parallelism)
        self._buffer: deque[tuple[int, Specification]] = deque()
        self._in_flight: dict[int, Specification] = {}
        self._handed_out = 0
        self._started = time.monotonic()
        self._claiming_seconds = 0.0  # spent claiming, waiting for the write turn included: not the runs' pace
        self._confirmed_at = self._started
        self._chunk_claimed_at = self._started  # when the last chunk's claim ended
        self._chunk_runs = 0  # how many runs it held
        self._lock = threading.Lock()  # guards the buffer and the runs in flight, for a moment each time
        self._taking = threading.Lock()  # held while a run is taken, claiming or renewing first if need be

    def __iter__(self) -> Iterator[tuple[int, Specification]]:
        while True:
            with self._taking:  # finishing runs meanwhile waits for no claim or renewal
                if self._buffer and time.monotonic() - self._confirmed_at > self._owner.lease_seconds * 2 / 3:
                    self.retain(self._renew())
                if not self._buffer:
                    self._hold_a_core_while_runs_are_short()
                    claimed = self._claim_more()
                    with self._lock:
                        self._buffer.extend(claimed)
                        self._confirmed_at = self._chunk_claimed_at = time.monotonic()
                        self._chunk_runs = len(claimed)
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

    def finish_all(self, run_ids: list[int]) -> list[tuple[int, Specification]]:
        """Mark handed-out runs as finished and return ``(run_id, specification)`` of each."""
        with self._lock:
            return [(run_id, self._in_flight.pop(run_id)) for run_id in run_ids]

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

    def _claim_more(self) -> Claimed:
        began = time.monotonic()
        claimed: Claimed = []
        size = self._chunk_size()
        outlook = self._store.claim_outlook(self._batch_id, self._owner)
        if outlook.pending:  # the write turn is taken only when there is something to claim
            shared = None
            if outlook.runners > 1:  # sized in the turn, by what the others left
                least = self._least_share()
                shared = functools.partial(share, size, runners=outlook.runners, at_least=least)
            claimed = self._claim_with(
                lambda first: self._store.claim(self._batch_id, self._owner, size, first, shared)
            )
        if not claimed and self._store.reclaim_abandoned(self._batch_id, self._owner):
            claimed = self._store.claim(self._batch_id, self._owner, self._chunk_size())
        if not claimed and self._slots is not None:
            self._slots.let_go()
        self._claiming_seconds += time.monotonic() - began
        return claimed

    def _hold_a_core_while_runs_are_short(self) -> None:
        """Before claiming more: hold a core slot while runs are short, waiting while other runners hold every slot,
        and let go of it once they are not (see :mod:`smallab_db.core_slots`); the wait counts as time spent
        claiming, not as the runs'. Having waited in vain, it claims without a slot for the rest of the call."""
        if self._slots is None:
            return
        if not self._runs_are_short():
            self._slots.let_go()
            return
        began = time.monotonic()
        if not self._slots.take(lambda: self._store.claim_outlook(self._batch_id, self._owner).pending):
            self._slots = None
        self._claiming_seconds += time.monotonic() - began

    def _runs_are_short(self) -> bool:
        """Whether the runs of the last chunk, all run by now, took under :data:`SHORT_RUN_SECONDS` each on
        average, from the end of its claim to now; before the first chunk, whether the batch's latest completed
        runs did."""
        if self._chunk_runs:
            return time.monotonic() - self._chunk_claimed_at < SHORT_RUN_SECONDS * self._chunk_runs
        latest = self._store.latest_run_seconds(self._batch_id)
        return latest is not None and latest < SHORT_RUN_SECONDS

    def _least_share(self) -> int:
        """The fewest runs to claim when runners share what is left of a batch: :data:`LEAST_SHARE_SECONDS` of
        work at the pace so far, so that the last claims are not a run at a time."""
        return max(self._min_chunk, int(self._pace() * LEAST_SHARE_SECONDS))

    def _pace(self) -> float:
        """Runs handed out per second so far, the time spent claiming left out."""
        working = time.monotonic() - self._started - self._claiming_seconds
        return self._handed_out / max(working, 1e-3)

    def _chunk_size(self) -> int:
        """About :data:`CLAIM_SECONDS` of work at the pace runs were taken so far, and at most :data:`CLAIM_GROWTH`
        times the runs taken so far: a few runs taken in the first milliseconds say little of the pace, so chunks
        grow in steps."""
        return max(self._min_chunk, min(MAX_CLAIM, CLAIM_GROWTH * self._handed_out, int(self._pace() * CLAIM_SECONDS)))


def share(size: int, pending: int, runners: int, at_least: int) -> int:
    """How many runs to claim, ``size`` at most: near a batch's end, when fewer than ``size`` runs are ``pending`` for
    each of the ``runners`` holding claims in it, an even share of them (rounded up), so that the runners finish
    together (guided self-scheduling); but ``at_least``, so that the last claims are not a run at a time."""
    if runners == 1 or pending >= runners * size:
        return size
    return min(size, max(at_least, -(-pending // runners)))
