"""Exporting a batch's runs from the database to a folder tree."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

from smallab_db.batches import batch_id_or_error
from smallab_db.errors import ExportError, describe_os_error
from smallab_db.experiment import Specification
from smallab_db.layouts import layout_named
from smallab_db.layouts.records import StoredRun
from smallab_db.queries import RunQueries
from smallab_db.results import Unpickler
from smallab_db.schema import COMPLETED, FAILED


def export_batch(
    queries: RunQueries, name: str, folder: Path, layout: str = "seed", pickle_results: bool = False
) -> Path:
    """Write batch ``name`` below ``folder/name`` in ``layout``; return that folder.

    ``pickle_results`` writes every result as a pickle, also those the layout would write as JSON (smallab 2.x's
    ``force_pickle``).

    Every file is written atomically and only when its content changed; run folders of runs that are no longer
    completed are removed. Results are unpickled to be written again: do not export a database you do not trust.
    A result that no longer unpickles is left out and named in an :class:`UnreadableResultWarning`.

    Raises:
        UsageError: there is no batch ``name``, or no layout ``layout``.
        ExportError: the folder cannot be written, or the batch name cannot be a folder name.
    """
    writer = layout_named(layout)
    batch_id = batch_id_or_error(queries, name)
    if name in (".", "..") or any(character in name for character in "/\\"):
        raise ExportError(f"batch name {name!r} cannot be a folder name: it holds a path separator or is . or ..")
    if "\0" in str(folder):
        raise ExportError(f"cannot export to {str(folder)!r:.1000}: it holds a NUL character: remove it")
    batch_folder = folder / name
    unpickler = Unpickler(name)
    completed, failed = _completed(queries, batch_id, unpickler, pickle_results), _failed(queries, batch_id)
    try:
        writer.export_batch(batch_folder, completed, failed)
    except OSError as error:
        raise ExportError(
            f"cannot export batch {name!r} to {str(batch_folder)!r:.1000}: {describe_os_error(error)}; then export "
            "again, which completes the tree (every file already written is whole)"
        ) from error
    finally:  # after a failed write, close their queries now, while the database is open, not at garbage collection
        completed.close()
        failed.close()
    unpickler.warn()
    return batch_folder


def _completed(
    queries: RunQueries, batch_id: int, unpickler: Unpickler, pickle_results: bool
) -> Generator[StoredRun, None, None]:
    for row in queries.iter_runs(batch_id, COMPLETED):
        readable, result = unpickler.load(row.result, row.id, row.spec_hash)
        if readable:
            as_json = row.result_json is not None and not pickle_results
            yield StoredRun(row.spec_hash, row.specification, result, as_json)


def _failed(queries: RunQueries, batch_id: int) -> Generator[Specification, None, None]:
    for row in queries.iter_runs(batch_id, FAILED):
        yield row.specification
