"""Batch names: what a valid one is, and finding a batch by name."""

from __future__ import annotations

from typing import Any

from smallab_db.errors import UsageError
from smallab_db.store import RunStore

MAX_NAME_LENGTH = 255


def check_batch_name(name: Any) -> None:
    """Raise :class:`UsageError` unless ``name`` is a non-empty string of at most 255 characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"the batch name must be a non-empty string of at most {MAX_NAME_LENGTH} characters, but got {name!r:.80}"
        )


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
