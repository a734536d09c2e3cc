"""Statements executed with many rows at once through the driver's ``executemany``, compiled once.

SQLAlchemy runs each row of an ``executemany`` through its parameter machinery, which costs more than SQLite takes
to write the row; a :class:`BulkStatement` converts the rows with the same type processors and hands them to the
driver in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Row = Mapping[str, Any]
Converter = Callable[[Any], Any]
Step = tuple[str, Converter | None, Any]  # a parameter's name, its type's converter, and its value when fixed
DriverRow = tuple[Any, ...] | dict[str, Any]  # a row as the driver takes it


class BulkStatement:
    """An INSERT or UPDATE with named ``bindparam`` values, compiled for one dialect; :meth:`execute` runs it once per
    row in one driver call. Values bound in the statement itself (``.values(status="running")``) are fixed."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._sql = str(compiled)
        self._positional = compiled.positional
        self._names: list[str] = list(compiled.positiontup or compiled.binds)
        self._plan: list[Step] = []
        for name in self._names:
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self._plan.append((name, convert, _converted(convert, bind.effective_value)))

    def driver_rows(self, rows: Sequence[Row], shared: Row | None = None) -> list[DriverRow]:
        """Convert rows for :meth:`execute`; done before a transaction, it keeps the transaction short.

        Args:
            rows: each row's values, by bind parameter name.
            shared: values that are the same for every row, converted once.
        """
        plan = self._plan
        if shared:
            plan = [
                (name, None, _converted(convert, shared[name])) if name in shared else (name, convert, fixed)
                for name, convert, fixed in plan
            ]
        return [self._driver_row(plan, row) for row in rows]

    def execute(self, connection: Connection, driver_rows: list[DriverRow]) -> int:
        """Run the statement once per row, in the connection's transaction; return how many rows it changed."""
        if not driver_rows:
            return 0
        result = connection.exec_driver_sql(self._sql, driver_rows)
        return int(result.rowcount)

    def _driver_row(self, plan: list[Step], row: Row) -> DriverRow:
        values = [fixed if name not in row else _converted(convert, row[name]) for name, convert, fixed in plan]
        return tuple(values) if self._positional else dict(zip(self._names, values, strict=True))


def _converted(convert: Converter | None, value: Any) -> Any:
    return value if convert is None or value is None else convert(value)
