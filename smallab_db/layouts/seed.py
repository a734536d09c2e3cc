"""smallab's original layout: ``<batch>/<spec_hash>/specification.json``, ``<spec_hash>.pkl`` and
``<batch>/completed.json``. Each ``.pkl`` holds ``{"specification": ..., "result": ...}``."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

from smallab_db.experiment import Specification
from smallab_db.layouts.batch_files import PICKLE_PROTOCOL, SPECIFICATION, is_run_folder, write_completed
from smallab_db.layouts.files import remove_leftovers, remove_stale_folders, write_file
from smallab_db.layouts.links import real_folder, refusal
from smallab_db.layouts.records import FoundRun, StoredRun, Unreadable, found_run

NAME = "seed"


def export_batch(batch_folder: Path, completed: Iterable[StoredRun], failed: Iterable[Specification]) -> None:
    """Write the completed runs below ``batch_folder`` (failed runs have no place in this layout)."""
    batch_folder.mkdir(parents=True, exist_ok=True)
    exported = write_completed(batch_folder, completed, lambda run: _write_run(batch_folder / run.spec_hash, run))
    remove_stale_folders(batch_folder, exported, is_run_folder)


def _write_run(run_folder: Path, run: StoredRun) -> None:
    """Write one run as ``specification.json`` and ``<spec_hash>.pkl``."""
    run_folder.mkdir(exist_ok=True)
    remove_leftovers(run_folder, [SPECIFICATION, f"{run.spec_hash}.pkl"])
    write_file(run_folder / SPECIFICATION, json.dumps(run.specification, sort_keys=True, indent=1).encode())
    record = {"specification": run.specification, "result": run.result}
    write_file(run_folder / f"{run.spec_hash}.pkl", pickle.dumps(record, protocol=PICKLE_PROTOCOL))


def looks_like(batch_folder: Path) -> bool:
    """Tell whether ``batch_folder`` holds runs in this layout."""
    return any(isinstance(entry, Path) for entry in _run_files(batch_folder))


def read_batch(batch_folder: Path) -> Iterator[FoundRun | Unreadable]:
    """Yield every run of the tree, or what made its file or folder unreadable."""
    for entry in _run_files(batch_folder):
        if isinstance(entry, Unreadable):
            yield entry
            continue
        try:
            with entry.open("rb") as file:
                record = pickle.load(file)
        except Exception as error:  # any damage: truncated, foreign, a class that no longer imports
            yield Unreadable(entry, f"{type(error).__name__}: {error}")
            continue
        yield found_run(record, entry)


def _run_files(batch_folder: Path) -> Iterator[Path | Unreadable]:
    """Yield the ``.pkl`` files of the run folders (those holding a ``specification.json``), in name order, and
    the folders that cannot be read; symbolic links as :mod:`smallab_db.layouts.links` allows."""
    root = real_folder(batch_folder)
    try:
        children = sorted(batch_folder.iterdir())
    except OSError as error:
        yield Unreadable(batch_folder, f"{type(error).__name__}: {error}")
        return
    for folder in children:
        try:
            if not folder.is_dir() or not (folder / SPECIFICATION).is_file():
                continue
            if refused := refusal(folder, root):
                yield refused
                continue
            for path in sorted(folder.glob("*.pkl")):
                yield refusal(path, root) or path
        except OSError as error:
            yield Unreadable(folder, f"{type(error).__name__}: {error}")
