"""Running a user's statement on SQLite read-only, and stopping it on Ctrl-C or at its time limit.

Three guards keep the statement from changing anything: SQLite itself must report it as one statement that only
reads (``sqlite_statement``); the connection has ``query_only`` on; and its authorizer allows only reading and the
pragmas that only report (``database``).

Python's ``sqlite3`` module waits in C while SQLite works, so neither Ctrl-C nor a timer can raise an exception in
the middle of a long statement. SQLite's progress handler, a Python function that SQLite calls every
:data:`PROGRESS_INSTRUCTIONS` virtual-machine instructions (about a millisecond), stops it instead. Ctrl-C pressed
while SQLite works only asks the progress handler to stop (an exception raised inside the handler would be lost);
pressed at any other moment, it raises ``KeyboardInterrupt`` at once, as usual.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from smallab_db.database import create_read_only_engine, reason
from smallab_db.errors import QueryError
from smallab_db.sql_query import FETCH_ROWS, Rows, failure_error, timeout_error, writing_error
from smallab_db.sqlite_statement import check_reads_only

PROGRESS_INSTRUCTIONS = 100_000
_REFUSED_WRITES = ("not authorized", "readonly database")


class _Stopper:
    """Decides when the statement must stop: Ctrl-C was pressed, or SQLite has worked on it for ``timeout`` seconds
    (time spent between fetches, writing the output, does not count)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.interrupted = False
        self._spent = 0.0
        self._since: float | None = None  # when SQLite started its current piece of work

    def should_stop(self) -> bool:
        """The progress handler: a true value makes SQLite abort the statement."""
        return self.interrupted or self.timed_out()

    def timed_out(self) -> bool:
        """Tell whether SQLite has worked on the statement for longer than the time limit."""
        running = 0.0 if self._since is None else time.monotonic() - self._since
        return self.timeout is not None and self._spent + running > self.timeout

    def on_sigint(self, _signal: int, _frame: FrameType | None) -> None:
        """Ctrl-C: while SQLite works, ask the progress handler to stop; otherwise interrupt as usual."""
        if self._since is None:
            raise KeyboardInterrupt
        self.interrupted = True

    @contextmanager
    def working(self) -> Iterator[None]:
        """Let SQLite work (execute or fetch) and turn its errors into :class:`QueryError` or ``KeyboardInterrupt``."""
        self._since = time.monotonic()
        try:
            yield
        except sqlite3.Error as error:
            raise self._error(error) from None
        finally:
            self._spent += time.monotonic() - self._since
            self._since = None
        if self.interrupted:  # Ctrl-C came as the work ended, before the progress handler saw it
            raise KeyboardInterrupt

    def _error(self, error: sqlite3.Error) -> BaseException:
        if self.interrupted:
            return KeyboardInterrupt()
        if self.timeout is not None and self.timed_out():
            return timeout_error(self.timeout)
        message = str(error) or type(error).__name__
        if any(refusal in message for refusal in _REFUSED_WRITES):
            return writing_error(message)
        return failure_error(message)


@contextmanager
def run(url: URL, sql: str, timeout: float | None) -> Iterator[tuple[list[str], Rows]]:
    """Run ``sql`` on the SQLite database at ``url`` read-only and yield its column names and rows.

    Raises:
        QueryError: the statement failed, does more than read, or ran past ``timeout``.
        DatabaseError: the file does not exist or is not a SQLite database.
        KeyboardInterrupt: Ctrl-C stopped it.
    """
    engine = create_read_only_engine(url)
    try:
        check_reads_only(url.database or "", sql)
        with engine.connect() as connection:
            driver: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
            stopper = _Stopper(timeout)
            driver.set_progress_handler(stopper.should_stop, PROGRESS_INSTRUCTIONS)
            cursor = driver.cursor()
            try:
                with _stopping_on_ctrl_c(stopper):
                    with stopper.working():
                        cursor.execute(sql)
                    columns = [description[0] for description in cursor.description or []]
                    yield columns, _rows(cursor, stopper) if columns else iter(())
            finally:
                cursor.close()
                driver.set_progress_handler(None, 0)
                connection.rollback()
    except SQLAlchemyError as error:
        raise QueryError(f"cannot run the query: {reason(error)}") from error
    finally:
        engine.dispose()


def _rows(cursor: sqlite3.Cursor, stopper: _Stopper) -> Rows:
    while True:
        with stopper.working():
            chunk = cursor.fetchmany(FETCH_ROWS)
        if not chunk:
            return
        yield from chunk


@contextmanager
def _stopping_on_ctrl_c(stopper: _Stopper) -> Iterator[None]:
    """Route Ctrl-C to ``stopper`` while the block runs, if Ctrl-C is Python's usual ``KeyboardInterrupt`` here (only
    the main thread receives signals, and a program that set its own handler keeps it)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, stopper.on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
