"""Batch names: what a valid one is; finding a batch by name, and a run by the start of its hash."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Row

from smallab_db.errors import UsageError
from smallab_db.queries import RunQueries

MAX_NAME_LENGTH = 255
HASH_PREFIX = re.compile(r"[0-9a-fA-F]{1,64}")
MAX_FOLDER_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems


def check_batch_name(name: Any) -> None:
    """Raise :class:`UsageError` unless ``name`` can name a new batch, one that every later command can use.

    A batch name is a non-empty string of at most 255 characters, without NUL, that UTF-8 can encode (on a command
    line, a byte that is not UTF-8, a Latin-1 ``é`` say, reaches Python as a lone surrogate, which no database
    driver can send), and that can be a folder name, as ``export`` makes it one: no ``/`` or ``\\``, not ``.`` or
    ``..``, at most 255 bytes in UTF-8.
    """
    _check_text(name)
    if name in (".", "..") or "/" in name or "\\" in name:
        tidy = name.replace("/", "-").replace("\\", "-").strip(".") or "batch"
        raise UsageError(
            f"the batch name {name!r:.300} cannot be a folder name, which `export` makes of it: it holds a path "
            f"separator (/ or \\) or is . or ..; use another name, such as {tidy!r:.300}"
        )
    if len(name.encode("utf-8")) > MAX_FOLDER_NAME_BYTES:
        raise UsageError(
            f"the batch name {name!r:.80}… is {len(name.encode('utf-8'))} bytes long in UTF-8, but a folder name, "
            f"which `export` makes of it, holds at most {MAX_FOLDER_NAME_BYTES}: use a shorter name"
        )


def _check_text(name: Any) -> None:
    """Raise :class:`UsageError` unless ``name`` is text that could name a batch at all: what finding a batch
    needs (a batch an older smallab-db created may hold a ``/``)."""
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


def batch_id_or_error(queries: RunQueries, name: str) -> int:
    """Return the id of batch ``name``.

    Raises:
        UsageError: ``name`` is not text that can name a batch, or there is no such batch; the message lists the
            batches there are.
    """
    _check_text(name)
    batch_id = queries.find_batch(name)
    if batch_id is None:
        names = [batch for batch, _ in queries.batch_counts()]
        raise UsageError(f"no batch named {name!r} in this database; its batches are: {names or 'none'}")
    return batch_id


def run_by_hash_prefix(queries: RunQueries, hash_prefix: str, batch: str | None) -> Row[Any]:
    """Return the one run whose hash starts with ``hash_prefix`` (in batch ``batch``, if given): all its columns,
    plus ``batch``, its batch's name.

    Raises:
        UsageError: the prefix is not hexadecimal, or matches no run or several; there is no batch ``batch``.
    """
    batch_id = batch_id_or_error(queries, batch) if batch is not None else None
    if not HASH_PREFIX.fullmatch(hash_prefix):
        raise UsageError(
            f"the hash prefix {hash_prefix!r:.80} is not the start of a hash: give 1 to 64 hexadecimal digits "
            "(0-9, a-f), as `smallab-db runs` prints them"
        )
    matches = queries.runs_with_hash_prefix(hash_prefix, batch_id, limit=6)
    if not matches:
        where = f" in batch {batch!r}" if batch else ""
        raise UsageError(f"no run{where} has a hash starting with {hash_prefix!r}: list them with `smallab-db runs`")
    if len(matches) > 1:
        found = ", ".join(f"{row.spec_hash[:16]} (batch {row.batch!r})" for row in matches[:5])
        more = "" if batch else " or --batch NAME"
        raise UsageError(f"hash prefix {hash_prefix!r} matches several runs: {found}; give more characters{more}")
    return matches[0]
