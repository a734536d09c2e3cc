"""Folder-tree layouts that batches are exported to and imported from, one module per layout."""

from __future__ import annotations

from types import ModuleType

from smallab_db.errors import UsageError
from smallab_db.layouts import seed, smallab2

LAYOUTS: dict[str, ModuleType] = {seed.NAME: seed, smallab2.NAME: smallab2}


def layout_named(name: str) -> ModuleType:
    """Return the layout module called ``name``.

    Raises:
        UsageError: there is no such layout.
    """
    try:
        return LAYOUTS[name]
    except KeyError:
        raise UsageError(f"unknown layout {name!r}: choose one of {sorted(LAYOUTS)}") from None
