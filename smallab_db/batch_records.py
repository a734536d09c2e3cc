"""Reading a batch back as smallab 2.x's records, ``{"specification": …, "result": …}``: from the database, or,
when the database does not hold the batch, from the folder tree that smallab 2.x or an export wrote."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from smallab_db import migration
from smallab_db.database import resolve_url
from smallab_db.errors import UnreadableResultWarning
from smallab_db.layouts import smallab2
from smallab_db.layouts.records import Unreadable
from smallab_db.queries import RunQueries
from smallab_db.results import Unpickler
from smallab_db.schema import COMPLETED


def iter_records(
    name: str, database: str | os.PathLike[str] | URL | None = None, folder: str | os.PathLike[str] = "experiment_runs"
) -> Iterator[dict[str, Any]]:
    """Yield ``{"specification": …, "result": …}`` of every completed run of batch ``name``.

    The database (default ``$SMALLAB_DB``, else ``./smallab.db``) is read without changing it. When it does not
    exist or has no batch ``name``, the records of the smallab2 tree ``folder/name/experiments`` are read instead,
    as smallab 2.x's ``experiment_iterator`` read them. Results that do not load are left out and named in an
    :class:`UnreadableResultWarning`. Results are pickles: read only databases and trees you trust.

    Raises:
        SchemaError: the database's schema is not this smallab-db's.
    """
    url = resolve_url(database)
    if _exists(url):
        engine = migration.open_engine(url, writable=False)
        try:
            queries = RunQueries(engine)
            batch_id = queries.find_batch(name)
            if batch_id is not None:
                unpickler = Unpickler(name)
                for row in queries.iter_runs(batch_id, COMPLETED):
                    readable, result = unpickler.load(row.result, row.id, row.spec_hash)
                    if readable:
                        yield {"specification": row.specification, "result": result}
                unpickler.warn()
                return
        finally:
            engine.dispose()
    unreadable = []
    for entry in smallab2.read_records(Path(folder, name)):
        if isinstance(entry, Unreadable):
            unreadable.append(f"{entry.path}: {entry.reason}")
        else:
            yield entry[1]
    if unreadable:
        warnings.warn(
            f"{len(unreadable)} file(s) of batch {name!r} could not be read and were left out: "
            + "; ".join(unreadable[:20]),
            UnreadableResultWarning,
            stacklevel=2,
        )


def _exists(url: URL) -> bool:
    """Whether there is a database to read: any server database, or a SQLite file that is not empty."""
    if url.get_backend_name() != "sqlite":
        return True
    path = Path(url.database or "")
    return path.is_file() and path.stat().st_size > 0
