"""Reading stored results back into Python objects."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

from smallab_db.errors import UsageError
from smallab_db.schema import STATUSES
from smallab_db.store import RunStore


class UnreadableResultWarning(UserWarning):
    """Some stored results could not be unpickled (for example their module was renamed); they were left out."""


def batch_id_or_error(store: RunStore, name: str) -> int:
    """Return the id of batch ``name``.

    Raises:
        UsageError: there is no such batch; the message lists the batches there are.
    """
    batch_id = store.find_batch(name)
    if batch_id is None:
        names = [batch for batch, _ in store.batch_counts()]
        raise UsageError(f"no batch named {name!r} in this database; its batches are: {names or 'none'}")
    return batch_id


def load_results(store: RunStore, name: str, status: str | None) -> list[dict[str, Any]]:
    """Return ``[{"specification": ..., "result": ...}]`` of batch ``name``'s runs with ``status`` (None: all).

    A result that does not unpickle is left out and named in an :class:`UnreadableResultWarning`.
    """
    if status is not None and status not in STATUSES:
        raise UsageError(f"status must be one of {STATUSES} or None, but got {status!r}")
    loaded: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for row in store.iter_runs(batch_id_or_error(store, name), status):
        result = None
        if row.result is not None:
            try:
                result = pickle.loads(row.result)
            except Exception as error:
                unreadable.append(f"run {row.id} ({row.spec_hash[:12]}): {type(error).__name__}: {error}")
                continue
        loaded.append({"specification": row.specification, "result": result})
    if unreadable:
        warnings.warn(
            f"{len(unreadable)} result(s) of batch {name!r} could not be unpickled and were left out "
            f"(is the module that defined them installed under the same name?): {'; '.join(unreadable[:20])}",
            UnreadableResultWarning,
            stacklevel=3,
        )
    return loaded
