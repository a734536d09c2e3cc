"""Rendering rows for the terminal: aligned tables, CSV and JSON, and runs as the commands show them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain, islice
from typing import Any

from smallab_db.experiment import Specification
from smallab_db.results import duration_seconds


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
    return json_array({column: json_value(value) for column, value in zip(columns, row, strict=True)} for row in rows)


# -- runs ----------------------------------------------------------------------------------------------------------


class VaryingKeys:
    """Finds the keys of a batch's specifications whose values differ between runs (or that only some runs have):
    what tells runs apart, as smallab 2.x named them."""

    def __init__(self) -> None:
        self._first: Specification | None = None
        self._first_texts: dict[str, str] = {}
        self.keys: set[str] = set()

    def add(self, specification: Specification) -> None:
        """Take one more specification into account."""
        texts = {key: json.dumps(value, sort_keys=True) for key, value in specification.items() if key not in self.keys}
        if self._first is None:
            self._first, self._first_texts = specification, texts
            return
        self.keys |= self._first.keys() ^ specification.keys()
        self.keys |= {key for key, text in texts.items() if self._first_texts.get(key, text) != text}

    def text(self, specification: Specification) -> str:
        """The specification as ``key=value`` of its varying keys, or all of it when no key varies."""
        shown = self.keys & specification.keys() if self.keys else specification.keys()
        return self._pairs(specification, sorted(shown))

    def same_in_every_run(self) -> str:
        """The keys that never vary, as ``key=value``; empty when :meth:`text` shows every key anyway."""
        if self._first is None or not self.keys:
            return ""
        return self._pairs(self._first, sorted(self._first.keys() - self.keys))

    @staticmethod
    def _pairs(specification: Specification, keys: Iterable[str]) -> str:
        return " ".join(f"{key}={cell_text(specification[key])}" for key in keys)


def run_record(row: Any, details: bool) -> dict[str, Any]:
    """A run as JSON, its specification and result as ``runner.results()`` gives them (the result is the
    ``result_json`` copy; ``result_pickle_bytes`` is the size of a result stored only as a pickle).

    Args:
        row: a row of ``runs``, or of ``RunQueries.iter_run_summaries``.
        details: add the batch, when it was created, where it ran, the error message and the traceback.
    """
    blob = row._mapping.get("result_pickle", row._mapping.get("result"))
    record = {
        "run_id": row.id,
        "spec_hash": row.spec_hash,
        "status": row.status,
        "attempts": row.attempts,
        "started_at": utc_text(row.started_at),
        "finished_at": utc_text(row.finished_at),
        "duration_s": duration_seconds(row.started_at, row.finished_at),
        "error_type": row.error_type,
        "specification": row.specification,
        "result": row.result_json,
        "result_pickle_bytes": len(blob) if blob is not None and row.result_json is None else None,
    }
    if details:
        record |= {
            "batch": row.batch,
            "created_at": utc_text(row.created_at),
            "host": row.host,
            "pid": row.pid,
            "error_message": row.error_message,
            "traceback": row.traceback,
        }
    return record


def utc_text(value: datetime | None) -> str | None:
    """A stored timestamp (UTC; SQLite's come back without a time zone) in ISO 8601 with its offset."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def json_array(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Yield one JSON array, an object at a time, as ``query --json`` prints it."""
    separator = "[\n"
    for record in records:
        yield separator + " " + json.dumps(record, indent=1, ensure_ascii=False).replace("\n", "\n ")
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


def batched(lines: Iterator[str], size: int) -> Iterator[str]:
    """Join ``lines`` into strings of ``size`` lines, so that output is written in a few large pieces."""
    while chunk := "".join(islice(lines, size)):
        yield chunk


def run_line(row: Any, specification: str) -> list[Any]:
    """One line of `runs`' table: hash prefix, status, attempts, duration and the specification as given."""
    duration = duration_seconds(row.started_at, row.finished_at)
    shown_duration = None if duration is None else f"{duration:.6f}"
    return [row.spec_hash[:12], row.status, row.attempts, shown_duration, specification]


def run_details(row: Any) -> str:
    """What `show` prints of a run (a row of ``runs`` with its ``batch``)."""
    fields = {
        "run": f"{row.id} of batch {row.batch!r}",
        "hash": row.spec_hash,
        "status": row.status,
        "attempts": row.attempts,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_s": duration_seconds(row.started_at, row.finished_at),
        "host": row.host,
        "pid": row.pid,
        "error_type": row.error_type,
        "error_message": row.error_message,
    }
    lines = [f"{name + ':':<15}{cell_text(value)}" for name, value in fields.items()]
    lines += ["specification:", indented(json.dumps(row.specification, indent=2, sort_keys=True))]
    if row.traceback:
        lines += ["traceback:", indented(row.traceback.rstrip())]
    if row.result_json is not None:
        lines += ["result:", indented(json.dumps(row.result_json, indent=2, sort_keys=True))]
    elif row.result is not None:
        lines.append(
            f"result:        stored only as a pickle ({len(row.result)} bytes), not JSON; the CLI does not unpickle: "
            "load it in Python with runner.results() if you trust this database"
        )
    else:
        lines.append("result:        none")
    return "\n".join(lines)


def indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
