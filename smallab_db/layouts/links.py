"""Symbolic links in a tree being imported: an importer never reads outside the batch folder.

A link to a file is read when the file lies inside the batch folder, and reported otherwise. A link to a folder is
reported and never followed, wherever it leads: no walk can loop, no run is read twice, and smallab 2.3.1's own
walk does not follow them either.
"""

from __future__ import annotations

import os
from pathlib import Path

from smallab_db.layouts.records import Unreadable


def real_folder(batch_folder: Path) -> Path:
    """The batch folder with every symbolic link resolved: what "inside the batch folder" is measured against."""
    return Path(os.path.realpath(batch_folder))


def refusal(path: Path, root: Path) -> Unreadable | None:
    """Return why ``path`` must not be read, or None when it may be.

    Args:
        path: a file or folder found in the tree.
        root: the batch folder, as :func:`real_folder` gives it.
    """
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if target.is_dir():
        return Unreadable(
            path,
            f"a symbolic link to the folder {str(target)!r}; importing does not follow links to folders: "
            "move or copy the folder into the tree",
        )
    if not target.is_relative_to(root):
        return Unreadable(
            path,
            f"a symbolic link to {str(target)!r}, outside the batch folder {str(root)!r}, which importing does not "
            "read: copy the file into the tree",
        )
    return None
