"""The ``smallab-db`` command line. Library errors become one clean line and a non-zero exit."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.engine import URL

from smallab_db import migration
from smallab_db.database import DATABASE_ENV, DEFAULT_DATABASE, create_engine, describe, resolve_url
from smallab_db.errors import SmallabError
from smallab_db.schema import STATUSES
from smallab_db.store import RunStore

Command = TypeVar("Command", bound=Callable[..., Any])

DATABASE_HELP = f"Database file path or SQLAlchemy URL; default ${DATABASE_ENV}, else ./{DEFAULT_DATABASE}."


def clean_errors(command: Command) -> Command:
    """Turn a :class:`SmallabError` into ``Error: <message>`` and exit status 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*arguments: Any, **options: Any) -> Any:
        try:
            return command(*arguments, **options)
        except SmallabError as error:
            raise click.ClickException(str(error)) from error

    return wrapper  # type: ignore[return-value]


def database_argument(command: Command) -> Command:
    """Add the optional ``URL`` argument, resolved to a SQLAlchemy URL."""
    return click.argument("url", required=False, metavar="[URL]")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smallab-db")
def main() -> None:
    """smallab-db: run experiments and keep every run in a SQL database.

    Example: smallab-db status results.db
    """


@main.command()
@database_argument
@clean_errors
def migrate(url: str | None) -> None:
    """Create the database, or upgrade its schema to this version of smallab-db.

    Idempotent, and safe when several processes run it at once. URL: see --help of the group.

    Example: smallab-db migrate results.db
    """
    resolved = resolve_url(url)
    revision = migration.migrate(resolved)
    click.echo(f"{describe(resolved)}: schema at revision {revision} (up to date)")


@main.command()
@database_argument
@clean_errors
def status(url: str | None) -> None:
    """List each batch with its number of runs per status.

    Example: smallab-db status results.db
    """
    with _opened(resolve_url(url)) as store:
        rows = store.batch_counts()
    if not rows:
        click.echo("no batches yet")
        return
    width = max(len("batch"), *(len(name) for name, _ in rows))
    click.echo(f"{'batch':<{width}}  " + "  ".join(f"{status:>9}" for status in STATUSES))
    for name, counts in rows:
        click.echo(f"{name:<{width}}  " + "  ".join(f"{counts.get(status, 0):>9}" for status in STATUSES))


@contextmanager
def _opened(url: URL) -> Iterator[RunStore]:
    """Open the database (building or upgrading its schema as the runner does) and close it afterwards."""
    engine = create_engine(url)
    try:
        migration.ensure_schema(engine)
        yield RunStore(engine)
    finally:
        engine.dispose()
