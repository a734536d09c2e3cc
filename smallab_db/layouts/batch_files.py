"""What both layouts write alike in a batch folder: the names they share, the pickle protocol, JSON as fixed bytes,
and ``completed.json``, the listing of the completed runs' specifications."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from smallab_db.layouts.files import atomic_file, remove_leftovers
from smallab_db.layouts.records import StoredRun

COMPLETED = "completed.json"
SPECIFICATION = "specification.json"
PICKLE_PROTOCOL = 4  # fixed, so that a newer Python does not rewrite every file
_RUN_FOLDER = re.compile(r"[0-9a-f]{64}")


def is_run_folder(name: str) -> bool:
    """Tell whether a folder called ``name`` is one an export names after a run: its specification's hash."""
    return _RUN_FOLDER.fullmatch(name) is not None


def json_bytes(value: Any) -> bytes:
    """Encode ``value`` as ASCII JSON with sorted keys: the same bytes for the same value, on every locale."""
    return json.dumps(value, sort_keys=True).encode("ascii")


def write_completed(
    batch_folder: Path, completed: Iterable[StoredRun], write_run: Callable[[StoredRun], None]
) -> set[str]:
    """Write each completed run with ``write_run`` and list its specification in ``batch_folder/completed.json``,
    in one pass over ``completed``; return the hashes of the runs written.

    The listing replaces the old one, atomically, once every run is written.
    """
    remove_leftovers(batch_folder, [COMPLETED])
    written: set[str] = set()
    with atomic_file(batch_folder / COMPLETED) as listing:
        listing.write(b"[")
        for run in completed:
            listing.write((b", " if written else b"") + json_bytes(run.specification))
            written.add(run.spec_hash)
            write_run(run)
        listing.write(b"]")
    return written
