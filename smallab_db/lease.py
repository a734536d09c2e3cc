"""Keeping a runner's claims alive: one thread that owns the lease and renews it until it is stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from smallab_db import liveness
from smallab_db.records import Owner
from smallab_db.store import RunStore

logger = logging.getLogger("smallab_db")

# The lease is renewed this many times per lease period, so a renewal may be late by two thirds of it.
RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    """Renews ``owner``'s lease every third of it, in a thread of its own, and tells ``on_renewal`` which claims are
    still held (a claim another runner took over is missing), until :meth:`stop`.

    While it runs, this process counts as a live holder of ``owner.token`` (see :mod:`smallab_db.liveness`). A
    renewal that fails is logged and tried again at the next turn; the claims then run out only if it keeps failing
    for the rest of the lease.
    """

    def __init__(self, store: RunStore, owner: Owner, on_renewal: Callable[[set[int]], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_renewal = on_renewal
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._work, name="smallab-db-lease", daemon=True)

    def start(self) -> None:
        """Mark the token live in this process and start renewing."""
        liveness.hold(self._owner.token)
        self._thread.start()

    def renew(self) -> set[int]:
        """Renew the lease now and return the ids of the claims still held."""
        return self._store.renew_lease(self._owner)

    def stop(self) -> None:
        """Stop renewing and mark the token no longer live in this process."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        liveness.let_go(self._owner.token)

    def _work(self) -> None:
        interval = self._owner.lease_seconds / RENEWALS_PER_LEASE
        next_renewal = time.monotonic() + interval
        while not self._stopped.wait(max(0.0, next_renewal - time.monotonic())):
            next_renewal = time.monotonic() + interval
            try:
                self._on_renewal(self.renew())
            except Exception as error:  # the next turn tries again; the lease covers two more
                logger.warning("smallab-db: renewing the lease failed, trying again in %.1f s: %s", interval, error)
