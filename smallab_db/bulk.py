"""Statements executed with many rows at once through the driver's ``executemany``, compiled once.

SQLAlchemy runs each row of an ``executemany`` through its parameter machinery, which costs more than SQLite takes
to write the row; a :class:`BulkStatement` converts the rows with the same type processors and hands them to the
driver in one call, as parameters by name (SQLite's ``:name``, psycopg's ``%(name)s``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import DateTime
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

Row = Mapping[str, Any]
Converter = Callable[[Any], Any]


class BulkStatement:
    """An INSERT or UPDATE with named ``bindparam`` values, compiled once for a dialect; :meth:`execute` runs it once
    per row in one driver call. Values bound in the statement itself (``.values(status="running")``) are fixed; every
    row gives all the others (or they are ``shared``)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        writing = dialect
        if dialect.positional:  # SQLite's qmark style: write the SQL in its named style instead
            writing = cast(Any, type(dialect))(paramstyle="named", dbapi=dialect.dbapi)
        compiled = cast(SQLCompiler, statement.compile(dialect=writing))
        self._sql = str(compiled)
        self._converters: dict[str, Converter] = {}
        self._fixed: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            convert = converter(bind.type, dialect)
            if convert is not None:
                self._converters[name] = convert
            if not bind.required:
                self._fixed[name] = _converted(convert, bind.effective_value)

    def driver_rows(self, rows: Sequence[Row], shared: Row | None = None) -> list[dict[str, Any]]:
        """Convert rows for :meth:`execute`; done before a transaction, it keeps the transaction short.

        Args:
            rows: each row's values, by bind parameter name.
            shared: values that are the same for every row, converted once.
        """
        fixed = dict(self._fixed)
        converters = dict(self._converters)
        for name, value in (shared or {}).items():
            fixed[name] = _converted(converters.pop(name, None), value)
        steps = list(converters.items())
        converted = []
        for row in rows:
            values = {**fixed, **row}
            for name, convert in steps:
                value = values[name]
                if value is not None:
                    values[name] = convert(value)
            converted.append(values)
        return converted

    def execute(self, connection: Connection, driver_rows: list[dict[str, Any]]) -> int:
        """Run the statement once per row, in the connection's transaction; return how many rows it changed."""
        if not driver_rows:
            return 0
        result = connection.exec_driver_sql(self._sql, driver_rows)
        return int(result.rowcount)


def converter(type_: TypeEngine[Any], dialect: Dialect) -> Converter | None:
    """The function that turns a value of ``type_`` into what the driver takes: the engine's own (with its JSON
    serialiser), except for SQLite timestamps, written as the same text three times faster."""
    if dialect.name == "sqlite" and isinstance(type_, DateTime):
        return sqlite_timestamp
    return type_.dialect_impl(dialect).bind_processor(dialect)


def sqlite_timestamp(value: datetime) -> str:
    """The text SQLAlchemy stores a timestamp as in SQLite, ``YYYY-MM-DD HH:MM:SS.ffffff``, of its fields as they are
    (smallab-db's timestamps are UTC)."""
    return value.isoformat(" ", "microseconds")[:26]


def _converted(convert: Converter | None, value: Any) -> Any:
    return value if convert is None or value is None else convert(value)
