"""Writing a batch's completed runs as smallab's folder tree, each file atomically."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from smallab_db.errors import ExportError
from smallab_db.results import batch_id_or_error
from smallab_db.schema import COMPLETED
from smallab_db.store import RunStore

_RUN_FOLDER = re.compile(r"[0-9a-f]{64}")


def export_seed_tree(store: RunStore, name: str, folder: Path) -> Path:
    """Write ``folder/name/<hash>/specification.json``, ``<hash>.pkl`` and ``folder/name/completed.json``.

    Each ``<hash>.pkl`` holds ``{"specification": ..., "result": ...}``; ``completed.json`` lists the completed
    specifications. Every file is written to a temporary file and renamed, so a reader never sees a partial file.

    Returns:
        The batch folder, ``folder/name``.

    Raises:
        UsageError: there is no batch ``name``.
        ExportError: the folder cannot be written.
    """
    batch_id = batch_id_or_error(store, name)
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ExportError(f"batch name {name!r} cannot be a folder name: it holds a path separator or is . or ..")
    batch_folder = folder / name
    exported: set[str] = set()
    try:
        batch_folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(batch_folder / "completed.json") as completed:
            completed.write(b"[")
            for index, row in enumerate(store.iter_runs(batch_id, COMPLETED)):
                exported.add(row.spec_hash)
                specification_text = json.dumps(row.specification, sort_keys=True, indent=1).encode("utf-8")
                run_folder = batch_folder / row.spec_hash
                run_folder.mkdir(exist_ok=True)
                with atomic_file(run_folder / "specification.json") as file:
                    file.write(specification_text)
                with atomic_file(run_folder / f"{row.spec_hash}.pkl") as file:
                    pickle.dump({"specification": row.specification, "result": pickle.loads(row.result)}, file)
                completed.write((b", " if index else b"") + json.dumps(row.specification, sort_keys=True).encode())
            completed.write(b"]")
        _remove_stale_runs(batch_folder, exported)
    except OSError as error:
        raise ExportError(f"cannot export batch {name!r} to {str(batch_folder)!r}: {error}") from error
    return batch_folder


def _remove_stale_runs(batch_folder: Path, exported: set[str]) -> None:
    """Remove run folders of an earlier export whose run is no longer completed."""
    for child in batch_folder.iterdir():
        if child.is_dir() and _RUN_FOLDER.fullmatch(child.name) and child.name not in exported:
            shutil.rmtree(child)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path`` and rename it over ``path`` once written; remove it on error."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
