"""Where the database is and how to connect to it: URL resolution, file checks and engine settings."""

from __future__ import annotations

import os
import socket
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from smallab_db.codec import serialize_json
from smallab_db.errors import DatabaseError, describe_os_error

DEFAULT_DATABASE = "smallab.db"
DATABASE_ENV = "SMALLAB_DB"
SQLITE_BUSY_TIMEOUT_MS = 120_000
SQLITE_HEADER = b"SQLite format 3\x00"
BEGIN_MODE_OPTION = "smallab_sqlite_begin"
POSTGRESQL_INSTALL = "pip install 'smallab-db[postgresql]'"
# A runner writes from one thread at a time (claims, lease, outcomes take turns on one lock) and reads little, so
# two connections per process are enough: N runners need 2N of the server's max_connections.
POSTGRES_POOL_SIZE = 2


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
    if url.get_backend_name() == "postgres":
        raise DatabaseError(
            f"database URL {url.render_as_string()!r} starts with postgres://, which SQLAlchemy does not know: write "
            f"postgresql:// instead (PostgreSQL needs `{POSTGRESQL_INSTALL}`)"
        )
    if url.drivername == "postgresql":  # no driver named: use psycopg 3, which smallab-db installs
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise DatabaseError(
            f"an in-memory SQLite database ({url.render_as_string()!r}) cannot be shared between the runner's "
            "connections: give a file path such as 'results.db'"
        )
    return url


def beside_sqlite_file(url: URL, suffix: str) -> str | None:
    """The path of a file beside a SQLite database file: its path followed by ``suffix``; None for PostgreSQL, and
    for SQLite in memory or given as a ``file:`` URI."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + suffix


def describe(url: URL) -> str:
    """Name a database for messages: the file path for SQLite, else the URL without its password."""
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database
    return url.render_as_string(hide_password=True)


def unusable_url_error(url: URL, error: Exception) -> DatabaseError:
    """The error for a URL SQLAlchemy cannot use (an unknown scheme), or whose driver is not installed."""
    if isinstance(error, ImportError) and url.get_backend_name() == "postgresql":
        return DatabaseError(
            f"cannot use database URL {describe(url)!r}: its driver, psycopg 3, is not installed ({error}): "
            f"`{POSTGRESQL_INSTALL}` installs it"
        )
    return DatabaseError(
        f"cannot use database URL {describe(url)!r}: {error}; give a file path, or a sqlite:// or postgresql:// URL "
        f"(PostgreSQL needs `{POSTGRESQL_INSTALL}`)"
    )


def reason(error: BaseException) -> object:
    """The driver's own error behind a SQLAlchemy error, which says what went wrong without SQLAlchemy's noise."""
    return getattr(error, "orig", None) or error


def check_sqlite_file(url: URL, writable: bool = True) -> None:
    """Refuse, without touching anything, a SQLite path in a missing directory, a file that is not a SQLite
    database, and (when ``writable``) a read-only file or directory.

    Raises:
        DatabaseError: naming the path and what to do.
    """
    if url.get_backend_name() != "sqlite" or url.database is None or url.database.startswith("file:"):
        return
    try:
        _check_sqlite_path(Path(url.database), writable)
    except OSError as error:  # a path too long, a folder that cannot be looked into
        raise DatabaseError(f"cannot open database: {describe_os_error(error)}") from error


def _check_sqlite_path(path: Path, writable: bool) -> None:
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
    if writable and path.exists() and not os.access(path, os.W_OK):
        raise DatabaseError(
            f"database {str(path)!r} is read-only: make it writable (chmod u+w) or work on a copy; "
            "`smallab-db query` can read it as it is"
        )
    if writable and not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"cannot open database {str(path)!r}: directory {str(path.parent)!r} is not writable, and SQLite keeps "
            "its -wal and -shm files beside the database; choose a writable directory"
        )


def create_engine(url: URL) -> Engine:
    """Create an engine with smallab-db's settings (for SQLite: WAL, busy timeout, immediate transactions)."""
    check_sqlite_file(url)
    options: dict[str, Any] = {"json_serializer": serialize_json}
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif url.get_backend_name() == "postgresql":
        options.update(pool_pre_ping=True, pool_size=POSTGRES_POOL_SIZE, max_overflow=0)
        # No server-side prepared statements: PgBouncer in transaction mode hands each transaction to any server
        # connection, where a statement prepared on another is missing.
        options["connect_args"] = {"prepare_threshold": None}
        if "application_name" not in url.query:  # shows in pg_stat_activity which process holds a connection
            options["connect_args"]["application_name"] = f"smallab-db pid {os.getpid()} on {socket.gethostname()}"
    try:
        engine = sqlalchemy.create_engine(url, **options)
    except (ArgumentError, ImportError) as error:
        raise unusable_url_error(url, error) from error
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def create_read_only_engine(url: URL) -> Engine:
    """Create an engine that cannot change the database: SQLite with ``query_only`` on and an authorizer that allows
    only reading, PostgreSQL with read-only transactions. Nothing is migrated or created.

    Raises:
        DatabaseError: the SQLite file does not exist or is not a database, or the URL is unusable.
    """
    if url.get_backend_name() == "sqlite":
        check_sqlite_file(url, writable=False)
        path = Path(url.database or "")
        if not path.is_file():
            raise DatabaseError(f"no database at {str(path)!r}: check the path, or run a batch there first")
        # mode=rw (read-only when the file is write-protected) rather than mode=ro: the last connection to close
        # then removes the -wal and -shm files; query_only and the authorizer keep every write out.
        location = f"file:{urllib.parse.quote(os.fsencode(path))}?mode=rw"  # the file's own bytes, UTF-8 or not
        engine = sqlalchemy.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(location, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000),
        )
        event.listen(engine, "connect", _make_sqlite_query_only)
        return engine
    # added to the URL's own options (a search_path, say), which connect_args would otherwise replace
    given = url.query.get("options", ())
    options = [given] if isinstance(given, str) else list(given)
    options.append("-c default_transaction_read_only=on")
    try:
        return sqlalchemy.create_engine(url, connect_args={"options": " ".join(options)})
    except (ArgumentError, ImportError) as error:
        raise unusable_url_error(url, error) from error


# Pragmas that only report. The first kind take a table or index name (or a limit) as their argument; the second
# only report a value when given no argument (with one, most of them change a setting, so they are refused then).
# Every other pragma is refused, whether or not it has an argument: PRAGMA wal_checkpoint has none and writes.
_INSPECTING_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
}
_REPORTING_PRAGMAS = {
    "application_id",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "query_only",
    "read_uncommitted",
    "schema_version",
    "user_version",
}
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def _make_sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = 1")
    dbapi_connection.set_authorizer(_allow_only_reading)


def _allow_only_reading(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    """SQLite authorizer: reads and the pragmas that only report pass; ATTACH, writes and every other pragma fail."""
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        pragma = (arg1 or "").lower()
        if pragma in _INSPECTING_PRAGMAS or (pragma in _REPORTING_PRAGMAS and arg2 is None):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


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
    cursor.execute("PRAGMA wal_autocheckpoint = 0")  # a store checkpoints between its write turns: see wal_checkpoints
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_MODE_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")
