"""The bundled Alembic migrations, the schema's one source of truth: their directory, their revisions and the upgrade.

Alembic takes about a tenth of a second to import, and as long again to tear down at exit, in every process that
imports it. So only building, upgrading or refusing a schema imports this module (see :mod:`smallab_db.migration`):
opening a database that is at the head revision does not.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection


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


def head() -> str:
    """Return the head revision of the bundled migrations."""
    revision = _script_directory().get_current_head()
    assert revision is not None, "the bundled migrations have no head revision"
    return revision


def is_known_revision(revision: str) -> bool:
    """Tell whether ``revision`` is one of the bundled migrations."""
    try:
        return _script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def upgrade_to_head(connection: Connection) -> None:
    """Run the bundled migrations on ``connection``, in its transaction, from its revision to the head."""
    command.upgrade(alembic_config(connection), "head")
