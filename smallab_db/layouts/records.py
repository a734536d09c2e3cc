"""What moves between the database and a folder tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallab_db.experiment import Result, Specification

RECORD_KEYS = ("specification", "result")


@dataclass(frozen=True)
class StoredRun:
    """A completed run read from the database, to be exported."""

    spec_hash: str
    specification: Specification
    result: Result
    result_is_json: bool  # the result survives a JSON round trip (``result_json`` is not NULL)


@dataclass(frozen=True)
class FoundRun:
    """A completed run found in a folder tree, to be imported."""

    specification: Specification
    result: Result
    path: Path  # the file it was read from, for messages


@dataclass(frozen=True)
class Unreadable:
    """A file of a folder tree that could not be read; importing reports it and goes on."""

    path: Path
    reason: str


def found_run(record: Any, path: Path) -> FoundRun | Unreadable:
    """Return the run of a record read from ``path``, or why it is not ``{"specification": dict, "result": dict}``."""
    if not isinstance(record, dict) or not set(RECORD_KEYS) <= record.keys():
        return Unreadable(path, "not a {'specification': ..., 'result': ...} record")
    for key in RECORD_KEYS:
        if not isinstance(record[key], dict):
            return Unreadable(path, f"its {key} is a {type(record[key]).__name__}, not a dict")
    return FoundRun(record["specification"], record["result"], path)
