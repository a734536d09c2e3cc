"""What moves between the database and a folder tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoredRun:
    """A completed run read from the database, to be exported."""

    spec_hash: str
    specification: dict[str, Any]
    result: dict[str, Any]
    result_is_json: bool  # the result survives a JSON round trip (``result_json`` is not NULL)


@dataclass(frozen=True)
class FoundRun:
    """A completed run found in a folder tree, to be imported."""

    specification: dict[str, Any]
    result: dict[str, Any]
    path: Path  # the file it was read from, for messages


@dataclass(frozen=True)
class Unreadable:
    """A file of a folder tree that could not be read; importing reports it and goes on."""

    path: Path
    reason: str
