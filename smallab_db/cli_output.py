"""Rendering rows for the terminal: aligned tables, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import chain, islice
from typing import Any


def cell_text(value: Any) -> str:
    """Render one value as a single line of text."""
    if value is None:
        return ""
    if isinstance(value, bytes | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value).replace("\n", "\\n")


def printable(text: str) -> str:
    """Return ``text`` with what UTF-8 cannot encode (the lone surrogates of a file name's bytes that are not UTF-8)
    as backslash escapes, so that printing it cannot fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_value(value: Any) -> Any:
    """Return a JSON-serialisable form of one value (PostgreSQL's NUMERIC becomes a number, as on SQLite)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool | dict | list):
        return value
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return the rows as a table with a header and columns padded to their widest cell."""
    return "".join(table_lines(columns, iter(rows), len(rows))).rstrip("\n")


def table_lines(columns: Sequence[str], rows: Iterator[Sequence[Any]], measured_rows: int) -> Iterator[str]:
    """Yield a table's lines (each ending in a newline), with columns as wide as their widest cell among the header
    and the first ``measured_rows`` rows; a longer cell further down widens only its own line."""
    first = [[cell_text(value) for value in row] for row in islice(rows, measured_rows)]
    widths = [max([len(column), *(len(row[index]) for row in first)]) for index, column in enumerate(columns)]
    yield _aligned(columns, widths)
    yield "  ".join("-" * width for width in widths) + "\n"
    for texts in chain(first, ([cell_text(value) for value in row] for row in rows)):
        yield _aligned(texts, widths)


def _aligned(texts: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(text.ljust(width) for text, width in zip(texts, widths, strict=True)).rstrip() + "\n"


def csv_lines(columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> Iterator[str]:
    """Yield a CSV header line, then one line per row (a line may hold a quoted newline of a cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in chain([columns], ([cell_text(value) for value in row] for row in rows)):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def json_lines(columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> Iterator[str]:
    """Yield one JSON array of objects keyed by column name, an object at a time."""
    separator = "[\n"
    for row in rows:
        record = {column: json_value(value) for column, value in zip(columns, row, strict=True)}
        item = json.dumps(record, indent=1, ensure_ascii=False)
        yield separator + " " + item.replace("\n", "\n ")
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"
