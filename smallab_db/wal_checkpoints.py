"""Copying a SQLite file's write-ahead log back into the database between write turns, not inside them.

SQLite copies the log into the database (a checkpoint) in the commit that grows it past 1,000 pages, before that
commit returns: inside the writer's turn, so every runner sharing the file waits for the copy. So smallab-db's
connections turn that off (``PRAGMA wal_autocheckpoint = 0``, see :mod:`smallab_db.database`), and a store
checkpoints before it waits for a write turn, at most every :data:`CHECKPOINT_SECONDS`, in PASSIVE mode: the other
runners go on writing meanwhile, and the log stays small, so that the last connection to close, which copies what is
left, has little to do. The writer's own thread checkpoints, between two of its writes, so that the checkpoint
completes and the next write starts the log over (a checkpointer thread racing the writes left it growing, 275 MB
for 300,000 runs); and before a write, not after one, so that Ctrl-C during a checkpoint stops no write that
committed before its caller learned so.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

CHECKPOINT_SECONDS = 0.05


class WalCheckpoints:
    """The checkpoints one store makes of its SQLite file's log."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._last = time.monotonic()
        self._checkpointing = threading.Lock()  # one thread of the store checkpoints at a time; the others go on

    def before_write(self) -> None:
        """Checkpoint if the last checkpoint ended :data:`CHECKPOINT_SECONDS` ago or more. One that fails (another
        process is checkpointing, the disk is full) is left to the next write, or to the last connection's close."""
        if time.monotonic() - self._last < CHECKPOINT_SECONDS or not self._checkpointing.acquire(blocking=False):
            return
        try:
            connection = self._engine.raw_connection()  # no transaction: a checkpoint cannot run in one
            try:
                connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                connection.close()  # back to the pool
        except (SQLAlchemyError, sqlite3.Error):
            pass
        finally:
            self._last = time.monotonic()
            self._checkpointing.release()
