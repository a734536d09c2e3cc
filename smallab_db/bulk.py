"""Statements compiled once and handed to the driver as they are: with many rows at once (``executemany``), or once.

SQLAlchemy runs each row of an ``executemany`` through its parameter machinery, which costs more than SQLite takes
to write the row; a :class:`DriverStatement` converts the rows with the same type processors and hands them to the
driver in one call: by position to SQLite, by name to psycopg. Compiling a statement also costs more than running
it: :mod:`smallab_db.store_statements` compiles the store's statements once, when the store is made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, DateTime, LargeBinary
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from smallab_db.codec import JSONText

Row = Mapping[str, Any]
Converter = Callable[[Any], Any]


class DriverStatement:
    """A statement with named ``bindparam`` values, compiled once for a dialect; :meth:`execute` runs it once per row
    in one driver call, :meth:`execute_once` once. Values bound in the statement itself (``.values(status="running")``)
    are fixed; every row gives all the others (or they are ``shared``). JSON values are given serialised already,
    through :attr:`json_text`."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._sql = str(compiled)
        # SQLite binds by position, in this order (cheaper inside the transaction than by name); psycopg by name
        self._positions: list[str] | None = list(compiled.positiontup or []) if dialect.positional else None
        # SQLite takes JSON text as it is; elsewhere the engine's serialiser is told it is serialised already
        self.json_text: Callable[[str], str] = str if dialect.name == "sqlite" else JSONText
        self._converters: dict[str, Converter] = {}
        self._fixed: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            convert = converter(bind.type, dialect)
            if convert is not None:
                self._converters[name] = convert
            if not bind.required:
                self._fixed[name] = _converted(convert, bind.effective_value)

    def driver_rows(self, rows: list[dict[str, Any]], shared: Row | None = None) -> list[Any]:
        """Convert rows for :meth:`execute`, in the form the driver binds (tuples for SQLite, the dicts completed in
        place for psycopg); done before a transaction, it keeps the transaction short.

        Args:
            rows: each row's values, by bind parameter name: new dicts.
            shared: values that are the same for every row, converted once.
        """
        fixed = dict(self._fixed)
        converters = dict(self._converters)
        for name, value in (shared or {}).items():
            fixed[name] = _converted(converters.pop(name, None), value)
        steps = [(name, convert) for name, convert in converters.items() if name not in fixed]
        for row in rows:
            for name, convert in steps:
                value = row[name]
                if value is not None:
                    row[name] = convert(value)
            row.update(fixed)
        if self._positions is None:
            return rows
        order = self._positions
        return [tuple([row[name] for name in order]) for row in rows]

    def execute_once(self, connection: Connection, row: Row) -> CursorResult[Any]:
        """Run the statement once with ``row``'s values (converted here, in a copy: a transaction tried again reuses
        them), in the connection's transaction."""
        return connection.exec_driver_sql(self._sql, self.driver_rows([dict(row)])[0])

    def execute(self, connection: Connection, driver_rows: list[Any]) -> int:
        """Run the statement once per row, in the connection's transaction; return how many rows it changed."""
        if not driver_rows:
            return 0
        result = connection.exec_driver_sql(self._sql, driver_rows)
        return int(result.rowcount)


def converter(type_: TypeEngine[Any], dialect: Dialect) -> Converter | None:
    """The function that turns a value of ``type_`` into what the driver takes: the engine's own (with its JSON
    serialiser), except on SQLite: timestamps are written as the same text three times faster, and JSON text and
    bytes go to the driver as they are."""
    if dialect.name == "sqlite":
        if isinstance(type_, DateTime):
            return sqlite_timestamp
        if isinstance(type_, (JSON, LargeBinary)):
            return None
    return type_.dialect_impl(dialect).bind_processor(dialect)


def fetched(result: CursorResult[Any]) -> list[tuple[Any, ...]]:
    """Every row of ``result`` as the driver gives it, without SQLAlchemy's row objects or result processing (a
    JSON column comes as text from SQLite, decoded from PostgreSQL: see :func:`json_loader`); twice as fast.

    Raises:
        DBAPIError: the driver failed while fetching (SQLite computes the rows after the first one then), raised as
            SQLAlchemy raises the driver's errors, so that the store says what failed and retries what may pass.
    """
    driver_error = result.context.dialect.loaded_dbapi.Error
    try:
        return cast(list[tuple[Any, ...]], result.cursor.fetchall())
    except driver_error as error:
        raise DBAPIError.instance(None, None, error, driver_error, dialect=result.context.dialect) from error
    finally:
        result.close()


def json_loader(dialect: Dialect) -> Callable[[Any], Any]:
    """What turns a JSON column's value in :func:`fetched` rows into Python values for ``dialect``."""
    return json.loads if dialect.name == "sqlite" else _as_it_is


def _as_it_is(value: Any) -> Any:
    return value


def sqlite_timestamp(value: datetime) -> str:
    """The text SQLAlchemy stores a timestamp as in SQLite, ``YYYY-MM-DD HH:MM:SS.ffffff``, of its fields as they are
    (smallab-db's timestamps are UTC). The text up to the second is kept from one call to the next: timestamps
    written together mostly share it, and formatting a whole timestamp costs five times more."""
    global _last_second
    second = (value.second, value.minute, value.hour, value.day, value.month, value.year)
    last, prefix = _last_second
    if second != last:
        prefix = value.isoformat(" ", "seconds")[:19] + "."
        _last_second = (second, prefix)  # one assignment: threads see the pair whole
    return f"{prefix}{value.microsecond:06d}"


_last_second: tuple[tuple[int, ...], str] = ((), "")


def _converted(convert: Converter | None, value: Any) -> Any:
    return value if convert is None or value is None else convert(value)
