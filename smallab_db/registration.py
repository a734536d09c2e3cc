"""Registering a call's specifications in its batch, and skipping that work when the batch holds that very list.

Registering hashes every specification and looks it up: for a big list, more work than running trivial experiments.
So each batch records the digest of the list whose runs it holds exactly (table ``registrations``), and registering
that list again only reads the batch's statuses. Runners started together on one list take turns: the first
registers it while the others wait, then they find the list recorded.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from smallab_db import liveness, specification
from smallab_db.experiment import Specification
from smallab_db.records import Owner, RegistrationState
from smallab_db.store import RunStore

REGISTER_CHUNK = 20_000  # specifications per registering transaction
SCAN_FACTOR = 4  # read a batch's runs in one pass when they are at most this many per specification
WAIT_SECONDS = 0.02  # how often a runner waiting for another to register the same list looks again


@dataclass
class Registration:
    """Registering specifications in one batch, for one call of :meth:`ExperimentRunner.run`."""

    store: RunStore
    name: str  # the batch's, created if need be
    lease_seconds: float  # how long a turn to register lasts without renewal, should its runner stop
    keep_key_order: bool  # store specifications with their keys in the order given, not sorted

    def register(self, specifications: list[Specification], rerun_all: bool) -> tuple[int, list[int]]:
        """Insert the missing specifications (validated already) as pending, queue the failed ones again (the
        completed ones too with ``rerun_all``); return the batch's id and the ids of the runs completed that stay so.

        If the batch's runs are exactly this list's, only their statuses are read. If another runner is registering
        this list, it waits for it; if that runner stops, it takes its turn over. The runner that creates the batch
        takes the turn as it does.
        """
        digest = specification.list_digest(specifications, self.keep_key_order)
        owner = Owner(lease_seconds=self.lease_seconds)
        liveness.hold(owner.token)  # a turn it takes is known to be live here, from the moment it is taken
        try:
            return self._register(specifications, rerun_all, digest, owner)
        finally:
            liveness.let_go(owner.token)

    def _register(
        self, specifications: list[Specification], rerun_all: bool, digest: str, owner: Owner
    ) -> tuple[int, list[int]]:
        """:meth:`register` the list ``digest``, taking any turn to register as ``owner``."""
        batch_id = self.store.ensure_batch(self.name, registering=(digest, owner))
        while True:
            state = self.store.registration(batch_id)
            if state is None:  # the batch was deleted meanwhile: registering then fails, saying so
                return batch_id, self._register_each(batch_id, specifications, rerun_all)[0]
            if state.registering is not None and state.registering.token == owner.token:  # taken as it was created
                return batch_id, self._register_in_turn(batch_id, specifications, rerun_all, digest, owner)
            if state.listed_digest == digest and state.listed_count is not None:
                completed = self.store.register_listed(batch_id, state.listed_count, rerun_all)
                if completed is not None:
                    return batch_id, completed
            if _turn_is_live(state):
                if state.registering_digest == digest:
                    time.sleep(WAIT_SECONDS)
                    continue
                # another list: no need to wait for it
                return batch_id, self._register_each(batch_id, specifications, rerun_all)[0]
            before = state.registering.token if state.registering is not None else None
            if self.store.take_registration_turn(batch_id, digest, owner, after=before):
                return batch_id, self._register_in_turn(batch_id, specifications, rerun_all, digest, owner)

    def _register_in_turn(
        self, batch_id: int, specifications: list[Specification], rerun_all: bool, digest: str, owner: Owner
    ) -> list[int]:
        """Register the list while holding the turn, then record it as the batch's runs if they are exactly its."""
        listed = None
        try:
            renew = functools.partial(self.store.renew_registration_turn, batch_id, owner)
            completed, distinct = self._register_each(batch_id, specifications, rerun_all, renew)
            listed = (digest, distinct)
            return completed
        finally:
            self.store.end_registration_turn(batch_id, owner, listed)

    def _register_each(
        self,
        batch_id: int,
        specifications: list[Specification],
        rerun_all: bool,
        renew: Callable[[], None] = lambda: None,
    ) -> tuple[list[int], int]:
        """Hash and register every specification, in chunks, calling ``renew`` between them; return the ids of the
        completed runs and how many distinct specifications the list has.

        When the batch holds not many more runs than there are specifications, they are read in one pass first,
        which is faster than looking each hash up; otherwise each chunk looks its hashes up.
        """
        completed: list[int] = []
        distinct: set[int] = set()  # the hashes' own hashes: a collision only undercounts, so nothing is listed
        whole = self.store.count(batch_id) <= SCAN_FACTOR * len(specifications)
        known = self.store.known_runs(batch_id, whole)
        hashed = specification.hashed(specifications, self.keep_key_order)
        chunks = iter(lambda: list(itertools.islice(hashed, REGISTER_CHUNK)), [])
        for number, chunk in enumerate(chunks):
            if number:
                renew()
            distinct.update(hash(spec_hash) for spec_hash, _ in chunk)
            completed += self.store.register(batch_id, chunk, rerun_all, known)
        return completed, len(distinct)


def _turn_is_live(state: RegistrationState) -> bool:
    """Whether the runner registering a list now may still finish: its lease has not run out, and it is not known
    to have stopped."""
    holder = state.registering
    return holder is not None and state.registering_in_time and not holder.known_gone()
