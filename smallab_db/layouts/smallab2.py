"""smallab 2.3.1's layout, as its runner writes and reads it below ``experiment_runs/<batch>``.

``<batch>/experiments/<run>/run.json`` holds ``{"specification": ..., "result": ...}`` as JSON; a result that is
not JSON goes to ``run.pkl`` (the same record, pickled) with ``specification.json`` beside it.
``<batch>/completed.json`` and ``<batch>/failed.json`` list specifications.

smallab 2.3.1 takes a specification as done when any ``run.json`` or ``run.pkl`` below ``experiments/`` holds an
equal specification, whatever the folder is called (its folder names come from the user's ``get_name``). This
layout names each run folder by the specification's hash (64 lowercase hex digits: safe on every filesystem).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from smallab_db.experiment import Specification
from smallab_db.layouts.batch_files import PICKLE_PROTOCOL, SPECIFICATION, is_run_folder, json_bytes, write_completed
from smallab_db.layouts.files import remove_leftovers, remove_stale_folders, write_file
from smallab_db.layouts.links import real_folder, refusal
from smallab_db.layouts.records import FoundRun, StoredRun, Unreadable, found_run

try:  # smallab 2.3.1 pickles with dill, which pickles classes of a script's __main__ by value
    from dill import loads as _unpickle
except ImportError:
    from pickle import loads as _unpickle

NAME = "smallab2"
EXPERIMENTS = "experiments"
_FAILED = "failed.json"
RUN_JSON = "run.json"
RUN_PICKLE = "run.pkl"


def export_batch(batch_folder: Path, completed: Iterable[StoredRun], failed: Iterable[Specification]) -> None:
    """Write the completed runs and the ``completed.json`` and ``failed.json`` listings below ``batch_folder``.

    Run folders of an earlier export whose run is no longer completed are removed; other folders are kept.
    """
    experiments = batch_folder / EXPERIMENTS
    experiments.mkdir(parents=True, exist_ok=True)
    remove_leftovers(batch_folder, [_FAILED])
    exported = write_completed(batch_folder, completed, lambda run: _write_run(experiments / run.spec_hash, run))
    write_file(batch_folder / _FAILED, json_bytes(list(failed)))
    remove_stale_folders(experiments, exported, is_run_folder)


def looks_like(batch_folder: Path) -> bool:
    """Tell whether ``batch_folder`` holds runs in this layout."""
    experiments = batch_folder / EXPERIMENTS
    root = real_folder(batch_folder)
    return experiments.is_dir() and any(isinstance(entry, Path) for entry in _run_files(experiments, root))


def read_batch(batch_folder: Path) -> Iterator[FoundRun | Unreadable]:
    """Yield every run below ``batch_folder/experiments``, or what made its file or folder unreadable."""
    for entry in read_records(batch_folder):
        yield entry if isinstance(entry, Unreadable) else found_run(entry[1], entry[0])


def read_records(batch_folder: Path) -> Iterator[tuple[Path, Any] | Unreadable]:
    """Yield ``(path, record)`` of every ``run.json`` and ``run.pkl`` below ``batch_folder/experiments``, as smallab
    2.x's ``experiment_iterator`` reads them (whatever the record holds), or what made a file or folder unreadable.
    """
    experiments = batch_folder / EXPERIMENTS
    if not experiments.is_dir():
        return
    for entry in _run_files(experiments, real_folder(batch_folder)):
        yield entry if isinstance(entry, Unreadable) else _read_record(entry)


def _write_run(run_folder: Path, run: StoredRun) -> None:
    """Write one run as ``run.json``, or as ``run.pkl`` and ``specification.json``, removing the other form.

    The new form is in place before the old one goes, so smallab 2.3.1 never sees the run missing.
    """
    run_folder.mkdir(exist_ok=True)
    remove_leftovers(run_folder, [RUN_JSON, RUN_PICKLE, SPECIFICATION])  # smallab 2.3.1 would choke on them
    record = {"specification": run.specification, "result": run.result}
    if run.result_is_json:
        write_file(run_folder / RUN_JSON, json_bytes(record))
        obsolete = [RUN_PICKLE, SPECIFICATION]
    else:
        write_file(run_folder / SPECIFICATION, json_bytes(run.specification))
        write_file(run_folder / RUN_PICKLE, pickle.dumps(record, protocol=PICKLE_PROTOCOL))
        obsolete = [RUN_JSON]
    for name in obsolete:
        (run_folder / name).unlink(missing_ok=True)


def _run_files(folder: Path, root: Path) -> Iterator[Path | Unreadable]:
    """Yield the run files below ``folder`` in name order, and the folders that cannot be listed; symbolic links
    as :mod:`smallab_db.layouts.links` allows (``root`` is the real batch folder)."""
    try:
        children = sorted(folder.iterdir())
    except OSError as error:
        yield Unreadable(folder, f"{type(error).__name__}: {error}")
        return
    for child in children:
        is_run_file = child.name in (RUN_JSON, RUN_PICKLE)
        refused = refusal(child, root) if is_run_file or child.is_dir() else None
        if refused:
            yield refused
        elif child.is_dir():
            yield from _run_files(child, root)
        elif is_run_file and child.is_file():
            yield child


def _read_record(path: Path) -> tuple[Path, Any] | Unreadable:
    """Read the record of a ``run.json`` or ``run.pkl``."""
    try:
        content = path.read_bytes()
        return path, json.loads(content) if path.name == RUN_JSON else _unpickle(content)
    except Exception as error:  # any damage: truncated, corrupt, a class that no longer imports
        return Unreadable(path, f"{type(error).__name__}: {error}")
