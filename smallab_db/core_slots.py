"""At most one runner per core executes short runs of a batch on a SQLite file; the others wait for a free core.

Runners sharing a SQLite file whose runs take well under a millisecond spend most of their time on the file's single
writer. Beyond one runner per core they add no speed, only cost: every runner executing shares a core with the one
holding the write turn, and each turn reads again the pages the others changed (eight such runners on two cores ran
a batch of 10,000 trivial runs at 0.72-0.86 times the pace of one runner alone). So a serial runner whose runs are
shorter than :data:`SHORT_RUN_SECONDS` takes the slot of one of the cores it may run on before it claims more, and
waits while other runners hold them all; it lets go once it finds nothing left to claim or its runs prove longer. A
slot is an advisory lock (``flock``) on the file ``<database>-cores/<core number>``; the kernel lets go of it when its
runner closes it, exits or is killed. A runner stops waiting, and claims without a slot for the rest of its call,
once its batch made no progress for :data:`LOOK_SECONDS` (the slots' holders are stopped with Ctrl-Z, or run
another batch) or the slots cannot be made (a read-only folder) or locked. PostgreSQL's runners, on several
machines, take no slot. A child forked without exec does not keep a slot (see :mod:`smallab_db.lock_files`).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import URL

from smallab_db.database import beside_sqlite_file
from smallab_db.lock_files import LockFile

CORES_SUFFIX = "-cores"
SHORT_RUN_SECONDS = 0.001  # runs shorter than this, on average, take a core slot
POLL_SECONDS = 0.005  # how often a waiting runner tries the slots again
LOOK_SECONDS = 1.0  # how often it reads how many runs are left: unchanged since the last look, it stops waiting


def core_slots(url: URL) -> CoreSlots | None:
    """The slots of the cores this process may run on, for a SQLite database file; None for PostgreSQL, and for
    SQLite in memory or given as a ``file:`` URI."""
    folder = beside_sqlite_file(url, CORES_SUFFIX)
    if folder is None:
        return None
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return CoreSlots(Path(folder), cores)


class CoreSlots:
    """The slots of the ``cores`` (their numbers) in ``folder``, as one runner takes and lets go of them."""

    def __init__(self, folder: Path, cores: Sequence[int]) -> None:
        self._paths = [folder / str(core) for core in cores]
        self._held: LockFile | None = None  # open while a slot is held

    def take(self, left: Callable[[], int]) -> bool:
        """Take a free slot, waiting while other runners hold every one; return whether a slot is held.

        It stops waiting, without a slot, once ``left()`` (what is left to claim: the span of the pending runs' ids,
        which shrinks as runners claim, asked every :data:`LOOK_SECONDS` while it waits) is 0 or the same as at the
        last look, and goes on without one when the slots cannot be made or locked.
        """
        if self._held is not None:
            return True
        slots: list[LockFile] = []
        try:
            self._open_all(slots)
            self._wait_for_one(slots, left)
        except BaseException:  # Ctrl-C while waiting: even a slot just taken is let go
            self._held = None
            raise
        finally:
            for slot in slots:
                if slot is not self._held:
                    slot.close()
        return self._held is not None

    def let_go(self) -> None:
        """Let go of the slot held, if any."""
        if self._held is not None:
            self._held.close()  # which lets go of its lock
            self._held = None

    def _open_all(self, slots: list[LockFile]) -> None:
        """Add each slot's file, open, to ``slots``, making the files if need be; none when one cannot be made."""
        try:
            self._paths[0].parent.mkdir(exist_ok=True)
            for path in self._paths:
                slots.append(LockFile(path))
        except OSError:
            for slot in slots:
                slot.close()
            slots.clear()

    def _wait_for_one(self, slots: list[LockFile], left: Callable[[], int]) -> None:
        """Lock one of ``slots`` into ``_held``, waiting as :meth:`take` says."""
        seen: int | None = None
        looked_at = time.monotonic()
        while slots:
            for slot in slots:
                try:
                    fcntl.flock(slot.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # held by another runner
                    continue
                except OSError:  # a file system without flock
                    return
                self._held = slot
                return
            if seen is None or time.monotonic() - looked_at >= LOOK_SECONDS:
                now_left = left()
                if now_left in (0, seen):
                    return
                seen, looked_at = now_left, time.monotonic()
            time.sleep(POLL_SECONDS)
