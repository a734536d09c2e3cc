"""Alembic environment for smallab-db.

From code, ``smallab_db.migration`` passes a connection that already holds the migration lock. From the command
line (``alembic upgrade head`` in a checkout) the database is ``-x database=URL_OR_PATH``, else ``$SMALLAB_DB``,
else ``./smallab.db``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from smallab_db.database import create_engine, resolve_url
from smallab_db.migration import migration_transaction
from smallab_db.schema import VERSION_TABLE, metadata


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Compare only smallab-db's own tables: other tools may keep theirs in the same database."""
    return type_ != "table" or name in metadata.tables


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    engine = create_engine(resolve_url(context.get_x_argument(as_dictionary=True).get("database")))
    try:
        with migration_transaction(engine) as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("smallab-db migrations run online only: give a database with -x database=URL")
given_connection = context.config.attributes.get("connection")
if given_connection is None:
    run_from_command_line()
else:
    run_migrations(given_connection)
