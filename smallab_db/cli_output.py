"""Rendering rows for the terminal: aligned tables, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
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
    texts = [[cell_text(value) for value in row] for row in rows]
    widths = [max([len(column), *(len(row[index]) for row in texts)]) for index, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend(
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in texts
    )
    return "\n".join(lines)


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return the rows as CSV with a header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell_text(value) for value in row] for row in rows)
    return buffer.getvalue().rstrip("\n")


def json_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return the rows as a JSON array of objects keyed by column name."""
    objects = [{column: json_value(value) for column, value in zip(columns, row, strict=True)} for row in rows]
    return json.dumps(objects, indent=1, ensure_ascii=False)
