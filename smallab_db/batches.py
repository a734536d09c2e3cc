"""Batch names: what a valid one is, and finding a batch by name."""

from __future__ import annotations

from typing import Any

from smallab_db.errors import UsageError
from smallab_db.store import RunStore

MAX_NAME_LENGTH = 255


def check_batch_name(name: Any) -> None:
    """Raise :class:`UsageError` unless ``name`` can name a batch.

    A batch name is a non-empty string of at most 255 characters, without NUL, that UTF-8 can encode: on a command
    line, a byte that is not UTF-8 (a Latin-1 ``é``, say) reaches Python as a lone surrogate, which no database
    driver can send.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"the batch name must be a non-empty string of at most {MAX_NAME_LENGTH} characters, but got {name!r:.80}"
        )
    if "\0" in name:
        raise UsageError(
            f"the batch name {name!r} holds a NUL character, which PostgreSQL cannot store and no folder name can "
            "hold: remove it"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(
            f"the batch name {name!r} is not valid UTF-8 text (it holds {name[error.start]!r}, a lone surrogate, "
            "as a byte that is not UTF-8 on a command line becomes): give the name in UTF-8, or check the encoding "
            "of the terminal or script that passed it"
        ) from None


def batch_id_or_error(store: RunStore, name: str) -> int:
    """Return the id of batch ``name``.

    Raises:
        UsageError: ``name`` cannot be a batch name (see :func:`check_batch_name`), or there is no such batch; the
            message lists the batches there are.
    """
    check_batch_name(name)
    batch_id = store.find_batch(name)
    if batch_id is None:
        names = [batch for batch, _ in store.batch_counts()]
        raise UsageError(f"no batch named {name!r} in this database; its batches are: {names or 'none'}")
    return batch_id
