"""Running a user's statement on PostgreSQL as the reader role, inside the function that migration 0003 installs.

The statement is first only described (parsed and analysed, neither planned nor run): that gives its column names
and types, and refuses text that holds several statements or is not a query. Then, in a read-only transaction, it
runs inside :data:`~smallab_db.postgres_reader.QUERY_FUNCTION` as :data:`~smallab_db.postgres_reader.READER_ROLE`
(see :mod:`smallab_db.postgres_reader` for why that, and not ``SET ROLE``, keeps a superuser's statement from
writing, running programs or reading files), and the rows come through a server-side cursor, a chunk at a time.

The function returns its rows as anonymous records, so the call names their types in a column definition list,
built from the description; columns get positional names (``c1``, ``c2``…), so that duplicate names such as in
``SELECT 1 AS a, 2 AS a`` work, and the described names are given back to the caller. A column of a pseudo-type
(an anonymous ``ROW(…)``, ``anyarray``, ``void``), which no column definition list accepts, comes back as text.
Like every set-returning PL/pgSQL function, the function computes all its rows before the first one is fetched;
the server keeps them in memory up to ``work_mem``, then in a temporary file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from smallab_db.database import create_read_only_engine, reason
from smallab_db.errors import QueryError
from smallab_db.postgres_reader import QUERY_FUNCTION, READABLE, READER_ROLE, check_installed
from smallab_db.sql_query import (
    FETCH_ROWS,
    Rows,
    failure_error,
    several_statements_error,
    timeout_error,
    writing_error,
)

_LONGEST_TIMEOUT_MS = 2**31 - 1  # statement_timeout's largest value, about 24.8 days
_QUERY_CANCELED = "57014"
_INSUFFICIENT_PRIVILEGE = "42501"
_READ_ONLY_TRANSACTION = "25006"


@contextmanager
def run(url: URL, statement: str, timeout: float | None) -> Iterator[tuple[list[str], Rows]]:
    """Run ``statement`` on the PostgreSQL database at ``url`` as the reader role and yield its columns and rows.

    Raises:
        QueryError: the statement failed, is not one query, needs privileges the reader role lacks, or ran past
            ``timeout``; also when the function is not installed, naming the fix.
        DatabaseError: the URL cannot be used.
        KeyboardInterrupt: Ctrl-C stopped it (psycopg cancels the statement on the server first).
    """
    engine = create_read_only_engine(url)
    try:
        with engine.connect() as connection:  # closing it rolls the transaction back
            try:
                yield _start(connection, statement.rstrip().rstrip(";"), timeout)
            except psycopg.Error as error:
                raise _error(error.sqlstate or "", _first_line(error), timeout) from None
            except UnicodeEncodeError as error:
                raise QueryError(
                    f"the query holds text that the connection's encoding cannot carry ({error}): remove it"
                ) from error
    except DBAPIError as error:
        orig: Any = error.orig
        raise _error(getattr(orig, "sqlstate", None) or "", _first_line(orig), timeout) from None
    except SQLAlchemyError as error:
        raise QueryError(f"cannot run the query: {reason(error)}") from error
    finally:
        engine.dispose()


def _start(connection: Connection, statement: str, timeout: float | None) -> tuple[list[str], Rows]:
    """Check the function, describe the statement, and open a cursor on the function's rows, in one transaction."""
    function = check_installed(connection)
    connection.exec_driver_sql("SELECT set_config('search_path', %s, true)", (function.search_path,))
    if timeout is not None:
        milliseconds = min(max(1, math.ceil(timeout * 1000)), _LONGEST_TIMEOUT_MS)
        connection.exec_driver_sql("SELECT set_config('statement_timeout', %s, true)", (f"{milliseconds}ms",))
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    names, types = _describe(driver, statement)
    if not names:
        return [], iter(())
    numbered = [f"c{position}" for position in range(1, len(names) + 1)]
    kinds = connection.exec_driver_sql(
        "SELECT format_type(t.oid, c.typmod), t.typtype = 'p' "
        "FROM unnest(%s::oid[], %s::int[]) WITH ORDINALITY AS c(oid, typmod, position) "
        "JOIN pg_type AS t ON t.oid = c.oid ORDER BY c.position",
        ([oid for oid, _ in types], [typmod for _, typmod in types]),
    ).all()
    selected = ", ".join(f"{name}::text" if pseudo else name for name, (_, pseudo) in zip(numbered, kinds, strict=True))
    inner = f"SELECT {selected} FROM (\n{statement}\n) AS q({', '.join(numbered)})"
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL("text" if pseudo else type_name))
        for name, (type_name, pseudo) in zip(numbered, kinds, strict=True)
    )
    call = sql.SQL("SELECT * FROM {}(%s) AS r({})").format(sql.Identifier(function.schema, QUERY_FUNCTION), definitions)
    cursor = driver.cursor(name="smallab_db_query")
    cursor.execute(call, (inner,))
    return names, _rows(cursor)


def _describe(driver: psycopg.Connection[Any], statement: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Parse and analyse ``statement`` alone, then as the function will run it, without planning or running either.

    Returns:
        The column names, and each column's type OID and type modifier.

    Raises:
        QueryError: it fails on its own (errors then point into the statement as typed), holds several statements,
            or is not a query.
    """
    pgconn, encoding = driver.pgconn, driver.info.encoding
    failure = _prepare(pgconn, statement, encoding)
    if failure is not None:
        sqlstate, message = failure
        raise several_statements_error() if "multiple commands" in message else _error(sqlstate, message, None)
    failure = _prepare(pgconn, f"SELECT * FROM (\n{statement}\n) AS q", encoding)
    if failure is not None:
        raise writing_error(f"it is not a query such as SELECT, VALUES, TABLE or WITH … SELECT: {failure[1]}")
    description = pgconn.describe_prepared(b"")
    names = [(description.fname(i) or b"").decode(encoding) for i in range(description.nfields)]
    return names, [(description.ftype(i), description.fmod(i)) for i in range(description.nfields)]


def _prepare(pgconn: pq.abc.PGconn, statement: str, encoding: str) -> tuple[str, str] | None:
    """Prepare ``statement`` as the unnamed statement; return the error's SQLSTATE and message, or None."""
    result = pgconn.prepare(b"", statement.encode(encoding))
    if result.status == pq.ExecStatus.COMMAND_OK:
        return None
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    return sqlstate.decode(), message.decode(encoding, "replace")


def _rows(cursor: psycopg.ServerCursor[Any]) -> Rows:
    while chunk := cursor.fetchmany(FETCH_ROWS):
        yield from chunk


def _error(sqlstate: str, message: str, timeout: float | None) -> QueryError:
    if sqlstate == _QUERY_CANCELED and timeout is not None and "timeout" in message:
        return timeout_error(timeout)
    if sqlstate == _INSUFFICIENT_PRIVILEGE:
        return QueryError(
            f"smallab-db query runs as the role {READER_ROLE}, which may only read {', '.join(READABLE)} and the "
            f"system catalogs, and this statement needs more ({message}): query only those"
        )
    if sqlstate == _READ_ONLY_TRANSACTION:
        return writing_error(message)
    return failure_error(message)


def _first_line(error: object) -> str:
    diagnostic = getattr(error, "diag", None)
    primary = getattr(diagnostic, "message_primary", None)
    return primary or (str(error).strip().splitlines() or [type(error).__name__])[0]
