"""Where the database is and how to connect to it: URL resolution, file checks and engine settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from smallab_db.errors import DatabaseError

DEFAULT_DATABASE = "smallab.db"
DATABASE_ENV = "SMALLAB_DB"
SQLITE_BUSY_TIMEOUT_MS = 120_000
SQLITE_HEADER = b"SQLite format 3\x00"
BEGIN_MODE_OPTION = "smallab_sqlite_begin"


class JSONText(str):
    """JSON text that is already serialised: stored as it is instead of being serialised again."""


def serialize_json(value: Any) -> str:
    """The engines' JSON serialiser: passes :class:`JSONText` through, serialises anything else."""
    if type(value) is JSONText:
        return value
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def resolve_url(database: str | os.PathLike[str] | URL | None = None) -> URL:
    """Turn a path, a URL or nothing (``$SMALLAB_DB``, else ``./smallab.db``) into a SQLAlchemy URL.

    Raises:
        DatabaseError: the URL cannot be parsed, or names an in-memory SQLite database.
    """
    if database is None:
        database = os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE
    if isinstance(database, URL):
        url = database
    elif isinstance(database, str) and "://" in database:
        try:
            url = make_url(database)
        except ArgumentError as error:
            raise DatabaseError(f"cannot parse database URL {database!r}: {error}") from error
    else:
        url = URL.create("sqlite", database=str(Path(database).expanduser().absolute()))
    if url.drivername == "postgresql":  # no driver named: use psycopg 3, which smallab-db installs
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise DatabaseError(
            f"an in-memory SQLite database ({url.render_as_string()!r}) cannot be shared between the runner's "
            "connections: give a file path such as 'results.db'"
        )
    return url


def describe(url: URL) -> str:
    """Name a database for messages: the file path for SQLite, else the URL without its password."""
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def check_sqlite_file(url: URL) -> None:
    """Refuse a SQLite path in a missing directory, or a file that is not a SQLite database, without touching it.

    Raises:
        DatabaseError: naming the path and what to do.
    """
    if url.get_backend_name() != "sqlite" or url.database is None or url.database.startswith("file:"):
        return
    path = Path(url.database)
    if not path.parent.is_dir():
        raise DatabaseError(
            f"cannot open database {str(path)!r}: directory {str(path.parent)!r} does not exist; "
            "create it first or choose another path"
        )
    if path.is_dir():
        raise DatabaseError(f"cannot open database {str(path)!r}: it is a directory; give a file path")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise DatabaseError(
                f"{str(path)!r} is not a SQLite database (its header is {header[:16]!r}); it was left untouched: "
                "give the path of a smallab-db database, or a new file name"
            )


def create_engine(url: URL) -> Engine:
    """Create an engine with smallab-db's settings (for SQLite: WAL, busy timeout, immediate transactions)."""
    check_sqlite_file(url)
    options: dict[str, Any] = {"json_serializer": serialize_json}
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif url.get_backend_name() == "postgresql":
        options["pool_pre_ping"] = True
    try:
        engine = sqlalchemy.create_engine(url, **options)
    except (ArgumentError, ImportError) as error:
        raise DatabaseError(
            f"cannot use database URL {describe(url)!r}: {error}; give a file path, or a sqlite:// or "
            "postgresql:// URL (PostgreSQL needs `pip install 'smallab-db[postgresql]'`)"
        ) from error
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def read_only(connection: Connection) -> Connection:
    """Mark a connection so that its SQLite transactions start deferred (readers do not take the write lock)."""
    return connection.execution_options(**{BEGIN_MODE_OPTION: "DEFERRED"})


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")
