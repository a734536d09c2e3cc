"""smallab 2.x's ``smallab.utilities.experiment_loading.experiment_loader``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from smallab_db import file_locations
from smallab_db.batch_records import iter_records


def experiment_iterator(
    name: str, use_tqdm: bool = False, database: str | os.PathLike[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield ``{"specification": …, "result": …}`` of every completed run of batch ``name``: from the database
    (default ``$SMALLAB_DB``, else ``./smallab.db``), else from the tree ``experiment_runs/<name>`` that smallab 2.x
    or an export wrote. ``use_tqdm`` shows a progress bar while loading."""
    records = iter_records(name, database, file_locations.experiment_folder)
    return iter(tqdm(records, desc="Loading Experiments")) if use_tqdm else records
