"""Taking turns to write: the threads of a process, and the smallab-db processes sharing a SQLite file, write one
at a time, and a waiting writer goes as soon as the one before it is done.

SQLite alone makes a writer that finds the file locked sleep for growing intervals (up to 100 ms) before it tries
again, so runners sharing a file spend most of their time asleep. Here writers first take an advisory lock
(``flock``) on a file beside the database, ``<database>-lock``, which the kernel hands to a waiting writer as soon as
the one before lets go. SQLite's own locking still guards the data: the lock file only orders smallab-db's writers.
If it cannot be created (a folder made read-only since), or a writer holds it for longer than SQLite would wait (a
runner stopped with SIGSTOP in the middle of a write), the write goes ahead under SQLite's locking alone.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL

LOCK_SUFFIX = "-lock"


class WriteTurns:
    """The turns of writers to one database: a lock of this process, and for a SQLite file, its lock file. The thread
    holding the turn may take it again: several writes can share one turn."""

    def __init__(self, url: URL, patience_seconds: float) -> None:
        self._thread_lock = threading.Lock()
        self._holder: int | None = None  # the thread holding the turn
        self._lock_path = _lock_path(url)
        self._patience_seconds = patience_seconds

    def held_here(self) -> bool:
        """Whether the calling thread holds the turn."""
        return self._holder == threading.get_ident()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this writer's turn, and hold it for the block."""
        if self.held_here():
            yield
            return
        with self._thread_lock:
            descriptor = self._open_lock_file()
            try:
                if descriptor is not None:
                    self._wait_for(descriptor)
                self._holder = threading.get_ident()
                try:
                    yield
                finally:
                    self._holder = None
            finally:
                if descriptor is not None:
                    os.close(descriptor)  # which releases the lock: no descriptor stays open between writes

    def _open_lock_file(self) -> int | None:
        if self._lock_path is None:
            return None
        try:
            return os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            return None

    def _wait_for(self, descriptor: int) -> None:
        """Take the lock file's lock; if another writer holds it, wait until it lets go, or give up after the
        patience (SQLite's own locking then orders the write)."""
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:  # a file system without flock: SQLite's locking alone
            return
        # The kernel hands the lock over as soon as it is let go; the waiting is done in a thread of its own so
        # that it can be given up, on a duplicate of the descriptor: the lock belongs to the open file they share,
        # so it is held until this write closes its descriptor, and a wait given up that takes the lock after that
        # lets it go as it closes the duplicate. The duplicate also keeps the thread from ever locking another
        # file that reused the number of a descriptor closed meanwhile.
        taken = threading.Event()
        duplicate = os.dup(descriptor)
        threading.Thread(target=_take, args=(duplicate, taken), name="smallab-db-write-turn", daemon=True).start()
        taken.wait(self._patience_seconds)


def _take(descriptor: int, taken: threading.Event) -> None:
    """Wait for the lock of ``descriptor``, a duplicate of the writer's, then close it and say so."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError:  # no flock here
        pass
    finally:
        os.close(descriptor)
        taken.set()


def _lock_path(url: URL) -> str | None:
    """The lock file of a SQLite database file; None for PostgreSQL, which queues writers itself, and for SQLite
    in memory or given as a ``file:`` URI."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + LOCK_SUFFIX
