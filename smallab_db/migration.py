"""Building and upgrading the schema with the bundled Alembic migrations, the schema's one source of truth."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from smallab_db import postgres_reader
from smallab_db.database import (
    create_engine,
    create_read_only_engine,
    describe,
    read_only,
    reason,
)
from smallab_db.errors import DatabaseError, SchemaError
from smallab_db.schema import VERSION_TABLE
from smallab_db.transient import is_busy, retry_transient

# An arbitrary constant: the PostgreSQL advisory lock that serialises concurrent migrations.
_POSTGRES_MIGRATION_LOCK = 0x5A11AB


def migrations_directory() -> Path:
    """Return the Alembic script directory: inside the installed package, else ``migrations/`` of the checkout."""
    spec = importlib.util.find_spec("smallab_db.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic config for the bundled migrations, bound to ``connection`` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """Return the schema revision this version of smallab-db uses."""
    head = _script_directory().get_current_head()
    assert head is not None, "the bundled migrations have no head revision"
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the schema revision stored in the database, or None if smallab-db never migrated it."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def is_known_revision(revision: str) -> bool:
    """Tell whether ``revision`` is one of the bundled migrations."""
    try:
        return _script_directory().get_revision(revision) is not None
    except CommandError:
        return False


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """Yield a connection in a transaction that holds the database's migration lock.

    SQLite transactions start with ``BEGIN IMMEDIATE`` (see ``database``), which is the lock; PostgreSQL takes an
    advisory lock. Concurrent migrators therefore run one after the other and the later ones find nothing to do.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_POSTGRES_MIGRATION_LOCK})")
        yield connection


def upgrade(engine: Engine) -> str:
    """Create or upgrade the schema to the head revision under the migration lock; return the revision.

    On PostgreSQL, a schema already at the head gets the read-only query function if it lacks it (see
    :mod:`smallab_db.postgres_reader`).

    Raises:
        SchemaError: the database is at a revision newer than this smallab-db knows.
        DatabaseError: the database cannot be read or written.
    """
    url = engine.url

    def upgrade_under_lock() -> None:
        with migration_transaction(engine) as connection:
            revision = current_revision(connection)
            _refuse_unknown(revision, url)
            if revision != head_revision():
                command.upgrade(alembic_config(connection), "head")
            elif connection.dialect.name == "postgresql":
                postgres_reader.ensure_installed(connection)

    try:
        retry_transient(upgrade_under_lock, f"migrating {describe(url)}", is_busy)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot migrate {describe(url)}: {reason(error)}") from error
    return head_revision()


def migrate(url: URL) -> str:
    """Create or upgrade the database at ``url`` to the head revision; safe to run concurrently and repeatedly."""
    engine = create_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def ensure_schema(engine: Engine) -> None:
    """Check the schema when a database is opened: build a new one, upgrade an older SQLite one, refuse the rest.

    Raises:
        SchemaError: the schema is newer than this smallab-db, or an older non-SQLite schema needs ``migrate``.
        DatabaseError: the database cannot be read.
    """
    url = engine.url
    revision = _stored_revision(engine)
    if revision == head_revision():
        return
    _refuse_unknown(revision, url)
    if revision is not None and url.get_backend_name() != "sqlite":
        raise _needs_migrate(url, revision)
    upgrade(engine)


def _stored_revision(engine: Engine) -> str | None:
    """Read the schema revision, waiting out transient errors: while several processes open a brand-new SQLite file
    at once (one switching it to WAL, another building the schema), a read can be refused at once as locked.

    Raises:
        DatabaseError: the database cannot be read.
    """

    def read_revision() -> str | None:
        with read_only(engine.connect()) as connection, connection.begin():
            return current_revision(connection)

    try:
        return retry_transient(read_revision, f"reading the schema revision of {describe(engine.url)}", is_busy)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot open {describe(engine.url)}: {reason(error)}") from error


def _needs_migrate(url: URL, revision: str | None) -> SchemaError:
    found = "has no smallab-db schema" if revision is None else f"is at revision {revision}"
    return SchemaError(
        f"database {describe(url)} {found} but this smallab-db needs {head_revision()}: "
        f"run `smallab-db migrate {describe(url)}`"
    )


def _refuse_unknown(revision: str | None, url: URL) -> None:
    if revision is not None and not is_known_revision(revision):
        raise SchemaError(
            f"database schema of {describe(url)} is at revision {revision}, which is newer than this smallab-db "
            f"(which knows up to {head_revision()}); it was left untouched: upgrade smallab-db to open it"
        )


def open_engine(url: URL, writable: bool) -> Engine:
    """Open the database at ``url``.

    Writable: build a new schema or upgrade an older SQLite one (see :func:`ensure_schema`). Read-only: nothing is
    created or changed, and the schema must be the one this smallab-db uses.

    Raises:
        SchemaError: the schema is not usable as it is.
        DatabaseError: the database cannot be opened.
    """
    if writable:
        engine = create_engine(url)
        try:
            ensure_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return engine
    engine = create_read_only_engine(url)
    try:
        revision = _stored_revision(engine)
        if revision != head_revision():
            _refuse_unknown(revision, url)
            raise _needs_migrate(url, revision)
    except BaseException:
        engine.dispose()
        raise
    return engine
