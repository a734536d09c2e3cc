"""Folder-tree layouts that batches are exported to and imported from, one module per layout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from smallab_db.errors import UsageError
from smallab_db.experiment import Specification
from smallab_db.layouts import seed, smallab2
from smallab_db.layouts.records import FoundRun, StoredRun, Unreadable


class Layout(Protocol):
    """What a layout module provides."""

    NAME: str

    def export_batch(
        self, batch_folder: Path, completed: Iterable[StoredRun], failed: Iterable[Specification]
    ) -> None: ...

    def looks_like(self, batch_folder: Path) -> bool: ...

    def read_batch(self, batch_folder: Path) -> Iterator[FoundRun | Unreadable]: ...


LAYOUTS: dict[str, Layout] = {seed.NAME: seed, smallab2.NAME: smallab2}


def layout_named(name: str) -> Layout:
    """Return the layout called ``name``.

    Raises:
        UsageError: there is no such layout.
    """
    try:
        return LAYOUTS[name]
    except KeyError:
        raise UsageError(f"unknown layout {name!r}: choose one of {sorted(LAYOUTS)}") from None
