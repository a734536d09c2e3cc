"""Writing files atomically, and only when their content changed."""

from __future__ import annotations

import filecmp
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside ``path``; once written, rename it over ``path`` unless ``path`` already holds
    the same bytes (then the old file stays untouched). On error the temporary file is removed."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX)
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())  # mkstemp makes the file private; an export is meant to be shared
        with os.fdopen(descriptor, "wb") as file:
            yield file
        if path.is_file() and filecmp.cmp(temporary, path, shallow=False):
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path, names: Iterable[str]) -> None:
    """Remove the temporary files that :func:`atomic_file` left in ``folder`` for the files called ``names`` when its
    process was killed (a process that merely fails removes its own). Two exports into the same folder at once
    would remove each other's: export a batch to a folder from one process at a time."""
    for name in names:
        for leftover in folder.glob(f".{glob.escape(name)}.*{_TEMPORARY_SUFFIX}"):
            if not leftover.is_dir():
                leftover.unlink(missing_ok=True)


def write_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` atomically, leaving the file untouched if it already holds exactly that."""
    with atomic_file(path) as file:
        file.write(content)


def remove_stale_folders(parent: Path, keep: set[str], is_run_folder: Callable[[str], bool]) -> None:
    """Remove the run folders below ``parent`` (as told by ``is_run_folder``) whose name is not in ``keep``."""
    for child in parent.iterdir():
        if child.is_dir() and is_run_folder(child.name) and child.name not in keep:
            shutil.rmtree(child)


_TEMPORARY_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
