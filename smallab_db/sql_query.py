"""Running one SQL statement that the user typed, on a connection that cannot write, and streaming its rows.

Each database has its own module: ``sqlite_query`` (a connection with ``query_only``, an authorizer that allows only
reading, and SQLite's own verdict that the statement reads) and ``postgres_query`` (the statement runs inside a
function owned by a role that may only read smallab-db's tables). This module picks one and holds what they share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

from sqlalchemy.engine import URL

from smallab_db.database import unusable_url_error
from smallab_db.errors import QueryError

FETCH_ROWS = 1000
"""Rows fetched from the database at a time: the most a query holds in memory (PostgreSQL: on the client)."""

Rows = Iterator[tuple[Any, ...]]


@dataclass(frozen=True)
class QueryResult:
    """The column names of a statement's result (none for a statement that returns no rows) and its rows, which
    arrive from the database as they are iterated."""

    columns: list[str]
    rows: Rows


@contextmanager
def read_only_query(url: URL, sql: str, timeout: float | None = None) -> Iterator[QueryResult]:
    """Run ``sql`` read-only and yield its result once its first rows have arrived; the transaction is rolled back
    and the connection closed when the block ends.

    Args:
        url: the database.
        sql: one statement that only reads (on PostgreSQL, one query: SELECT, VALUES, TABLE or WITH … SELECT).
        timeout: stop the statement once the database has worked on it for this many seconds (None: no limit).

    Raises:
        QueryError: the statement failed, tried to write, or ran past ``timeout``; the database is unchanged. Also
            raised while iterating the rows.
        DatabaseError: the database cannot be opened, or its driver is not installed.
        KeyboardInterrupt: Ctrl-C stopped the statement (on SQLite too, within a second).
    """
    with _backend(url, sql, timeout) as (columns, rows):
        yield QueryResult(columns, _first_fetched(rows))


def _first_fetched(rows: Rows) -> Rows:
    """Fetch the first rows now, so that errors that come with them come before any output; hold them no longer
    than until they are iterated."""
    return chain(list(islice(rows, FETCH_ROWS)), rows)


def _backend(url: URL, sql: str, timeout: float | None) -> AbstractContextManager[tuple[list[str], Rows]]:
    # Imported here: the PostgreSQL module needs psycopg, an optional dependency, and both modules use this one's
    # messages below.
    if url.get_backend_name() == "postgresql":
        try:
            from smallab_db import postgres_query
        except ImportError as error:  # psycopg 3, an optional dependency, is missing
            raise unusable_url_error(url, error) from error

        return postgres_query.run(url, sql, timeout)
    if url.get_backend_name() == "sqlite":
        from smallab_db import sqlite_query

        return sqlite_query.run(url, sql, timeout)
    raise QueryError(
        f"smallab-db query runs on SQLite and PostgreSQL, not on {url.get_backend_name()}: give a file path or a "
        "postgresql:// URL"
    )


def timeout_error(timeout: float) -> QueryError:
    """The error for a statement stopped at its time limit."""
    return QueryError(
        f"the query ran past its time limit of {timeout:g} s (--timeout) and was stopped; nothing was changed: "
        "narrow it (WHERE, LIMIT) or give a larger --timeout"
    )


def several_statements_error() -> QueryError:
    """The error for a text that holds more than one statement."""
    return QueryError("smallab-db query runs one read-only statement at a time: run the others separately")


def writing_error(reason: str) -> QueryError:
    """The error for a statement that would write, or do anything but read; ``reason`` says why it was refused."""
    return QueryError(f"smallab-db query runs one read-only SELECT and refused this statement ({reason})")


def failure_error(message: str) -> QueryError:
    """The error for a statement the database could not run; ``message`` is the database's word."""
    return QueryError(f"the query failed: {message}")
