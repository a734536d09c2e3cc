"""Importing a folder tree written by smallab, or exported by smallab-db, into the database as completed runs."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from smallab_db.batches import check_batch_name
from smallab_db.codec import canonical_json, queryable_json
from smallab_db.errors import SpecError, UsageError, describe_os_error
from smallab_db.layouts import LAYOUTS, Layout
from smallab_db.layouts.records import FoundRun, Unreadable
from smallab_db.records import ImportedRun
from smallab_db.specification import hash_canonical, validate_specification
from smallab_db.store import RunStore

IMPORT_CHUNK = 500


@dataclass
class ImportReport:
    """What an import did: runs added or turned completed, runs already there, and files it skipped."""

    layout: str
    imported: int = 0
    already_present: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)


def detect_layout(batch_folder: Path) -> Layout:
    """Return the layout of the tree in ``batch_folder``.

    Raises:
        UsageError: the folder does not exist, cannot be looked at, or holds no run in a known layout.
    """
    try:
        if not batch_folder.is_dir():
            raise UsageError(f"cannot import {str(batch_folder)!r}: it is not a folder")
        for layout in LAYOUTS.values():
            if layout.looks_like(batch_folder):
                return layout
    except OSError as error:
        raise UsageError(f"cannot import {str(batch_folder)!r:.1000}: {describe_os_error(error)}") from error
    raise UsageError(
        f"cannot import {str(batch_folder)!r}: it holds no runs in a known layout ({', '.join(LAYOUTS)}); "
        "give the folder of one batch, such as experiment_runs/<name>"
    )


def import_tree(store: RunStore, batch_folder: Path, name: str) -> ImportReport:
    """Read every run of the tree in ``batch_folder`` into batch ``name`` as completed; importing again adds nothing.

    A file that cannot be read, or whose specification is not a JSON object, is reported and skipped. Results are
    unpickled to be stored: import only trees you trust.
    """
    check_batch_name(name)
    layout = detect_layout(batch_folder)
    report = ImportReport(layout=layout.NAME)
    batch_id = store.ensure_batch(name)
    runs = _importable(layout.read_batch(batch_folder), report)
    while chunk := list(islice(runs, IMPORT_CHUNK)):
        imported = store.import_completed(batch_id, chunk)
        report.imported += imported
        report.already_present += len({run.spec_hash for run in chunk}) - imported
    return report


def _importable(found: Iterator[FoundRun | Unreadable], report: ImportReport) -> Iterator[ImportedRun]:
    for item in found:
        if isinstance(item, Unreadable):
            report.unreadable.append(item)
            continue
        try:
            validate_specification(item.specification)
            result_pickle = pickle.dumps(item.result, protocol=pickle.HIGHEST_PROTOCOL)
        except (SpecError, pickle.PicklingError, TypeError, AttributeError) as error:
            report.unreadable.append(Unreadable(item.path, str(error)))
            continue
        canonical = canonical_json(item.specification)
        yield ImportedRun(hash_canonical(canonical), canonical, result_pickle, queryable_json(item.result))
