"""Reading stored results back into Python objects; results that no longer unpickle are reported, not fatal."""

from __future__ import annotations

import pickle
import warnings
from datetime import datetime
from typing import Any

from smallab_db.batches import batch_id_or_error
from smallab_db.errors import UnreadableResultWarning, UsageError
from smallab_db.queries import RunQueries
from smallab_db.schema import STATUSES


class Unpickler:
    """Unpickles results of one batch, remembering which ones failed and why, to warn about them once."""

    def __init__(self, batch: str) -> None:
        self.batch = batch
        self.unreadable: list[str] = []

    def load(self, blob: bytes, run_id: int, spec_hash: str) -> tuple[bool, Any]:
        """Return ``(True, result)``, or ``(False, None)`` when the blob does not unpickle."""
        try:
            return True, pickle.loads(blob)
        except Exception as error:  # any reason: a renamed module, a truncated blob, a failing __setstate__
            self.unreadable.append(f"run {run_id} ({spec_hash[:12]}): {type(error).__name__}: {error}")
            return False, None

    def warn(self, stacklevel: int = 3) -> None:
        """Emit one :class:`UnreadableResultWarning` naming every result that did not unpickle, if any."""
        if self.unreadable:
            warnings.warn(
                f"{len(self.unreadable)} result(s) of batch {self.batch!r} could not be unpickled and were left out "
                "(is the module that defined them installed under the same name?): " + "; ".join(self.unreadable[:20]),
                UnreadableResultWarning,
                stacklevel=stacklevel + 1,
            )


def load_results(queries: RunQueries, name: str, status: str | None) -> list[dict[str, Any]]:
    """Return ``[{"specification": ..., "result": ...}]`` of batch ``name``'s runs with ``status`` (None: all).

    A result that does not unpickle is left out and named in an :class:`UnreadableResultWarning`.

    Raises:
        UsageError: there is no batch ``name``, or ``status`` is not a status.
    """
    if status is not None and status not in STATUSES:
        raise UsageError(f"status must be one of {STATUSES} or None, but got {status!r}")
    unpickler = Unpickler(name)
    loaded: list[dict[str, Any]] = []
    for row in queries.iter_runs(batch_id_or_error(queries, name), status):
        result = None
        if row.result is not None:
            readable, result = unpickler.load(row.result, row.id, row.spec_hash)
            if not readable:
                continue
        loaded.append({"specification": row.specification, "result": result})
    unpickler.warn()
    return loaded


def duration_seconds(started_at: datetime | None, finished_at: datetime | None) -> float | None:
    """Return how long a run took, or None when it has not finished."""
    if started_at is None or finished_at is None:
        return None
    return (finished_at - started_at).total_seconds()
