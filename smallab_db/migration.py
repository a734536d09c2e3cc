"""Opening a database at the schema this smallab-db uses: building a new schema, upgrading an older one, refusing
the rest.

The schema's one source of truth is the bundled Alembic migrations (:mod:`smallab_db.alembic_migrations`). Opening a
database that is at their head revision only reads its revision, without importing Alembic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import column, inspect, select, table
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

# The head revision of the bundled migrations (alembic_migrations.head(), which a test keeps equal to it): a database
# at it is opened without importing Alembic.
HEAD_REVISION = "0008"

# An arbitrary constant: the PostgreSQL advisory lock that serialises concurrent migrations.
_POSTGRES_MIGRATION_LOCK = 0x5A11AB

# The table where Alembic records the revision a database is at, as Alembic makes it.
_VERSIONS = table(VERSION_TABLE, column("version_num"))


def current_revision(connection: Connection, url: URL) -> str | None:
    """Return the schema revision stored in the database at ``url``, or None if smallab-db never migrated it.

    Raises:
        SchemaError: the database records several revisions.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = list(connection.execute(select(_VERSIONS.c.version_num)).scalars())
    if len(revisions) > 1:
        raise SchemaError(
            f"database {describe(url)} records several schema revisions in {VERSION_TABLE} "
            f"({', '.join(sorted(revisions))}), but smallab-db's migrations follow one line; it was left untouched: "
            "keep only the row of the revision its schema is at"
        )
    return revisions[0] if revisions else None


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
            revision = current_revision(connection, url)
            _refuse_unknown(revision, url)
            if revision != HEAD_REVISION:
                from smallab_db import alembic_migrations  # imported only to build or upgrade (see the module's doc)

                alembic_migrations.upgrade_to_head(connection)
            elif connection.dialect.name == "postgresql":
                postgres_reader.ensure_installed(connection)

    try:
        retry_transient(upgrade_under_lock, f"migrating {describe(url)}", is_busy)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot migrate {describe(url)}: {reason(error)}") from error
    return HEAD_REVISION


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
    revision = _stored_revision(engine, url)
    if revision == HEAD_REVISION:
        return
    _refuse_unknown(revision, url)
    if revision is not None and url.get_backend_name() != "sqlite":
        raise _needs_migrate(url, revision)
    upgrade(engine)


def _stored_revision(engine: Engine, url: URL) -> str | None:
    """Read the schema revision of the database at ``url`` through ``engine`` (a read-only engine's own URL does not
    name its SQLite file), waiting out transient errors: while several processes open a brand-new SQLite file at
    once (one switching it to WAL, another building the schema), a read can be refused at once as locked.

    Raises:
        SchemaError: the database records several revisions.
        DatabaseError: the database cannot be read.
    """

    def read_revision() -> str | None:
        with read_only(engine.connect()) as connection, connection.begin():
            return current_revision(connection, url)

    try:
        return retry_transient(read_revision, f"reading the schema revision of {describe(url)}", is_busy)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot open {describe(url)}: {reason(error)}") from error


def _needs_migrate(url: URL, revision: str | None) -> SchemaError:
    found = "has no smallab-db schema" if revision is None else f"is at revision {revision}"
    return SchemaError(
        f"database {describe(url)} {found} but this smallab-db needs {HEAD_REVISION}: "
        f"run `smallab-db migrate {describe(url)}`"
    )


def _refuse_unknown(revision: str | None, url: URL) -> None:
    if revision is None or revision == HEAD_REVISION:
        return
    from smallab_db import alembic_migrations  # imported only for a database not at the head (see the module's doc)

    if not alembic_migrations.is_known_revision(revision):
        raise SchemaError(
            f"database schema of {describe(url)} is at revision {revision}, which is newer than this smallab-db "
            f"(which knows up to {HEAD_REVISION}); it was left untouched: upgrade smallab-db to open it"
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
        revision = _stored_revision(engine, url)
        if revision != HEAD_REVISION:
            _refuse_unknown(revision, url)
            raise _needs_migrate(url, revision)
    except BaseException:
        engine.dispose()
        raise
    return engine
