"""Telling the database errors that a retry may get past (a dropped connection, a busy database) from lasting
ones, and retrying the former with backoff."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from smallab_db.database import reason
from smallab_db.errors import TransientDatabaseError

# How long an operation that failed with a transient error is retried.
RETRY_SECONDS = 120.0
# PostgreSQL errors that a retry may get past: admin or crash shutdown and cannot connect now (the server restarts;
# class 08, connection exceptions, too), and serialization failure or deadlock (another transaction was in the way).
_SHUTDOWN_SQLSTATES = {"57P01", "57P02", "57P03"}
_BUSY_SQLSTATES = {"40001", "40P01"}

T = TypeVar("T")
logger = logging.getLogger("smallab_db")


def is_transient(error: BaseException) -> bool:
    """Tell whether a database error may pass if the operation is tried again: the database was busy (see
    :func:`is_busy`), or the connection dropped or was refused (a server restart, ``pg_terminate_backend``)."""
    if isinstance(error, TransientDatabaseError) or is_busy(error):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    original = _original(error)
    if type(original).__module__.startswith("psycopg"):
        sqlstate = getattr(original, "sqlstate", None)
        if sqlstate is None:  # a failure of the connection itself: refused, closed, timed out
            return type(original).__name__ == "OperationalError"
        return sqlstate.startswith("08") or sqlstate in _SHUTDOWN_SQLSTATES
    return False


def is_busy(error: BaseException) -> bool:
    """Tell whether the database refused an operation only because another one held it: SQLite's BUSY or LOCKED
    (by its error code), a PostgreSQL serialization failure or deadlock."""
    original = _original(error)
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return sqlite_code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return type(original).__module__.startswith("psycopg") and getattr(original, "sqlstate", None) in _BUSY_SQLSTATES


def _original(error: BaseException) -> BaseException:
    """The driver's exception behind a SQLAlchemy one (or behind a smallab-db error raised from one)."""
    while isinstance(error.__cause__, BaseException) and not hasattr(error, "orig"):
        error = error.__cause__
    return getattr(error, "orig", None) or error


def retry_transient(
    operation: Callable[[], T],
    what: str,
    retryable: Callable[[BaseException], bool] = is_transient,
    deadline_seconds: float = RETRY_SECONDS,
) -> T:
    """Run ``operation``, again with growing pauses while it fails with an error ``retryable`` accepts, for up to
    ``deadline_seconds``; then the last error is raised.

    Args:
        operation: the whole unit of work, a transaction or a read, so that a retry repeats all of it.
        what: what the operation does, for the warning logged at the first retry.
        retryable: which errors to retry: :func:`is_transient` (the default) or only :func:`is_busy`.
        deadline_seconds: how long to keep trying.
    """
    deadline = time.monotonic() + deadline_seconds
    pause = 0.02
    warned = False
    while True:
        try:
            return operation()
        except Exception as error:
            if not retryable(error) or time.monotonic() + pause > deadline:
                raise
            if not warned and not is_busy(error):  # waiting for another writer is routine; a dropped connection is not
                logger.warning(
                    "smallab-db: %s failed (%s); trying again for up to %.0f s", what, reason(error), deadline_seconds
                )
                warned = True
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
