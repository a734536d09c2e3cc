"""Running one SQL statement that the user typed, on a connection that cannot write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from smallab_db.database import create_read_only_engine, reason
from smallab_db.errors import QueryError


@dataclass(frozen=True)
class QueryResult:
    """The column names and rows a statement returned (no columns for a statement that returns no rows)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


_SEVERAL_STATEMENTS = ("one statement at a time", "multiple commands into a prepared statement")
_WRITE_REFUSALS = ("readonly database", "read-only transaction", "not authorized", "authorization denied")


def run_read_only_query(url: URL, sql: str) -> QueryResult:
    """Execute ``sql`` read-only and return what it returned; the transaction is always rolled back.

    Raises:
        QueryError: the statement failed or tried to write; the database is unchanged.
        DatabaseError: the database cannot be opened.
    """
    engine = create_read_only_engine(url)
    try:
        with engine.connect() as connection:
            # The driver's own cursor: no parameter parsing of % or :name in the user's SQL.
            cursor: Any = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if connection.dialect.name == "postgresql":
                    cursor.execute(sql, prepare=True)  # a prepared statement refuses "COMMIT; BEGIN READ WRITE; …"
                else:
                    cursor.execute(sql)  # sqlite3 refuses more than one statement by itself
                columns = [description[0] for description in cursor.description or []]
                rows = [tuple(row) for row in cursor.fetchall()] if columns else []
            except Exception as error:
                raise _query_error(error) from error
            finally:
                cursor.close()
                connection.rollback()
    except SQLAlchemyError as error:
        raise QueryError(f"cannot run the query: {reason(error)}") from error
    finally:
        engine.dispose()
    return QueryResult(columns, rows)


def _query_error(error: Exception) -> QueryError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if any(refusal in message for refusal in _SEVERAL_STATEMENTS):
        return QueryError(f"smallab-db query runs one read-only statement at a time ({message})")
    if any(refusal in message for refusal in _WRITE_REFUSALS):
        return QueryError(f"smallab-db query is read-only and refused a statement that writes ({message})")
    return QueryError(f"the query failed: {message}")
