"""The ``smallab-db`` command line. Library errors become one clean line and a non-zero exit."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Row

from smallab_db import cli_output, export, importing, migration
from smallab_db.batches import batch_id_or_error
from smallab_db.database import describe, resolve_url
from smallab_db.errors import DatabaseError, QueryError, SmallabError, UsageError
from smallab_db.layouts import LAYOUTS
from smallab_db.results import duration_seconds
from smallab_db.schema import STATUSES
from smallab_db.sql_query import read_only_query
from smallab_db.store import RunStore

Command = TypeVar("Command", bound=Callable[..., Any])

SPECIFICATION_WIDTH = 60
TABLE_WIDTH_ROWS = 1000  # `query` sets a table's column widths from its first rows, as it cannot wait for all
OUTPUT_LINES = 100  # `query` writes its output this many lines at a time


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
    """Add the optional ``[URL]`` argument: a file path or SQLAlchemy URL."""
    return click.argument("url", required=False, metavar="[URL]")(command)


batch_option = click.option("--batch", "batch", required=True, metavar="NAME", help="The batch name.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smallab-db")
def main() -> None:
    """smallab-db: run experiments and keep every run in a SQL database.

    URL, where a command takes one, is a file path or SQLAlchemy URL; it defaults to $SMALLAB_DB, then
    ./smallab.db.

    Example: smallab-db status results.db
    """


@main.command()
@database_argument
@clean_errors
def migrate(url: str | None) -> None:
    """Create the database, or upgrade its schema to this version of smallab-db.

    Idempotent, and safe when several processes run it at once.

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
    with opened(url, "read") as store:
        rows = store.batch_counts()
    if not rows:
        click.echo("no batches yet")
        return
    columns = ["batch", *STATUSES]
    click.echo(cli_output.table(columns, [[name, *(counts.get(s, 0) for s in STATUSES)] for name, counts in rows]))


@main.command()
@click.argument("arguments", nargs=-1, required=True, metavar="[URL] SQL")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of objects instead of a table.")
@click.option("--timeout", metavar="SECONDS", help="Stop the query once it has run this many seconds.")
@clean_errors
def query(arguments: tuple[str, ...], as_csv: bool, as_json: bool, timeout: str | None) -> None:
    """Run one read-only SQL query and print its rows as they arrive. Anything that would write is refused.

    The tables are batches and runs; the view run_details has one row per run with its batch name and duration.
    On PostgreSQL, a query runs as the role smallab_db_reader, which may only read those (see the README).
    Ctrl-C stops a query at once. A table's column widths come from its first 1,000 rows.

    Example: smallab-db query results.db "SELECT batch, status, count(*) FROM run_details GROUP BY 1, 2"
    """
    if len(arguments) > 2:
        raise UsageError(f"query takes [URL] and one SQL statement, but got {len(arguments)} arguments: quote the SQL")
    if as_csv and as_json:
        raise UsageError("choose one of --csv and --json")
    url, sql = (None, arguments[0]) if len(arguments) == 1 else arguments
    seconds = None if timeout is None else _positive_seconds(timeout)
    try:
        with read_only_query(resolve_url(url), sql, seconds) as result:
            if not result.columns:
                click.echo("the statement returned no rows")
                return
            if as_csv:
                lines = cli_output.csv_lines(result.columns, result.rows)
            elif as_json:
                lines = cli_output.json_lines(result.columns, result.rows)
            else:
                lines = cli_output.table_lines(result.columns, result.rows, TABLE_WIDTH_ROWS)
            for chunk in _batched(lines, OUTPUT_LINES):
                click.echo(chunk, nl=False)
    except KeyboardInterrupt:
        raise QueryError("interrupted (Ctrl-C): the query was stopped, and nothing was changed") from None


def _positive_seconds(text: str) -> float:
    """Parse ``--timeout``: a positive, finite number of seconds.

    Raises:
        UsageError: naming the value.
    """
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"--timeout takes a positive number of seconds, but got {text!r}: for example --timeout 30")
    return seconds


def _batched(lines: Iterator[str], size: int) -> Iterator[str]:
    """Join ``lines`` into strings of ``size`` lines, so that output is written in a few large pieces."""
    while chunk := "".join(islice(lines, size)):
        yield chunk


@main.command()
@database_argument
@batch_option
@click.option("--status", "status_filter", type=click.Choice(STATUSES), help="Only runs with this status.")
@clean_errors
def runs(url: str | None, batch: str, status_filter: str | None) -> None:
    """List the runs of a batch: hash prefix, status, attempts, duration and specification.

    Example: smallab-db runs results.db --batch doubling --status failed
    """
    with opened(url, "read") as store:
        rows = [_run_line(row) for row in store.iter_run_summaries(batch_id_or_error(store, batch), status_filter)]
    if not rows:
        click.echo(f"no {status_filter or ''} runs in batch {batch!r}".replace("  ", " "))
        return
    click.echo(cli_output.table(["hash", "status", "attempts", "duration_s", "specification"], rows))


@main.command()
@database_argument
@click.argument("hash_prefix")
@click.option("--batch", "batch", metavar="NAME", help="Look only in this batch.")
@clean_errors
def show(url: str | None, hash_prefix: str, batch: str | None) -> None:
    """Print one run in full: specification, status, timestamps, host, error, traceback and JSON result.

    HASH_PREFIX is the start of the run's spec_hash, as `smallab-db runs` prints it. The CLI never unpickles.

    Example: smallab-db show results.db 3f2a9c
    """
    with opened(url, "read") as store:
        batch_id = batch_id_or_error(store, batch) if batch is not None else None
        matches = store.runs_with_hash_prefix(hash_prefix, batch_id, limit=6)
    if not matches:
        where = f" in batch {batch!r}" if batch else ""
        raise UsageError(f"no run{where} has a hash starting with {hash_prefix!r}: list them with `smallab-db runs`")
    if len(matches) > 1:
        found = ", ".join(f"{row.spec_hash[:16]} (batch {row.batch!r})" for row in matches[:5])
        raise UsageError(
            f"hash prefix {hash_prefix!r} matches several runs: {found}; give more characters or --batch NAME"
        )
    click.echo(_run_details(matches[0]))


@main.command(name="export")
@database_argument
@batch_option
@click.option("--to", "folder", required=True, type=click.Path(path_type=Path), help="The folder to write into.")
@click.option("--layout", type=click.Choice(sorted(LAYOUTS)), default="seed", show_default=True, help="Tree layout.")
@clean_errors
def export_command(url: str | None, batch: str, folder: Path, layout: str) -> None:
    """Write a batch's runs as a folder tree: smallab's (seed) or smallab 2.x's (smallab2).

    Exporting again rewrites only what changed. Results are unpickled to be written: export only databases you trust.

    Example: smallab-db export results.db --batch doubling --to experiment_runs --layout smallab2
    """
    with opened(url, "read") as store:
        written = export.export_batch(store, batch, folder, layout)
    click.echo(f"exported batch {batch!r} to {written} ({layout} layout)")


@main.command(name="import")
@click.argument("folder", type=click.Path(path_type=Path))
@batch_option
@database_argument
@clean_errors
def import_command(folder: Path, batch: str, url: str | None) -> None:
    """Read a batch folder written by smallab (either layout) into the database as completed runs.

    Importing again adds nothing; unreadable files are reported and skipped. The tree's pickles are loaded:
    import only trees you trust.

    Example: smallab-db import experiment_runs/doubling --batch doubling results.db
    """
    with opened(url, "create") as store:
        report = importing.import_tree(store, folder, batch)
    for unreadable in report.unreadable:
        click.echo(f"skipped {unreadable.path}: {unreadable.reason}", err=True)
    click.echo(
        f"imported {report.imported} run(s) into batch {batch!r} ({report.layout} layout); "
        f"{report.already_present} already there, {len(report.unreadable)} unreadable file(s) skipped"
    )


@main.command()
@database_argument
@batch_option
@clean_errors
def retry(url: str | None, batch: str) -> None:
    """Put a batch's failed runs back to pending, so that the next run of the batch executes them.

    Example: smallab-db retry results.db --batch doubling
    """
    with opened(url, "write") as store:
        count = store.requeue_failed(batch_id_or_error(store, batch))
    click.echo(f"{count} failed run(s) of batch {batch!r} are pending again")


@main.command()
@database_argument
@batch_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@clean_errors
def rm(url: str | None, batch: str, yes: bool) -> None:
    """Delete a batch and all its runs, after confirmation.

    Example: smallab-db rm results.db --batch doubling --yes
    """
    with opened(url, "write") as store:
        batch_id = batch_id_or_error(store, batch)
        total = sum(dict(store.batch_counts())[batch].values())
        if not yes:
            click.confirm(f"Delete batch {batch!r} and its {total} run(s)?", abort=True)
        deleted = store.delete_batch(batch_id)
    click.echo(f"deleted batch {batch!r} and its {deleted} run(s)")


@contextmanager
def opened(url: str | None, mode: str) -> Iterator[RunStore]:
    """Open the database for a command and close it afterwards.

    Args:
        url: the URL argument.
        mode: ``"read"`` changes nothing and needs the current schema; ``"write"`` needs an existing database and
            upgrades an older SQLite schema, as the runner does; ``"create"`` also creates a new one.

    Raises:
        DatabaseError: a SQLite file that does not exist, unless ``mode`` is ``"create"``.
    """
    resolved = resolve_url(url)
    if mode != "create" and resolved.get_backend_name() == "sqlite" and not Path(resolved.database or "").exists():
        raise DatabaseError(
            f"no database at {describe(resolved)!r}: check the path, or create one with "
            f"`smallab-db migrate {describe(resolved)}`"
        )
    engine = migration.open_engine(resolved, writable=mode != "read")
    try:
        yield RunStore(engine)
    finally:
        engine.dispose()


def _run_line(row: Row[Any]) -> list[Any]:
    duration = duration_seconds(row.started_at, row.finished_at)
    specification = " ".join(f"{key}={cli_output.cell_text(value)}" for key, value in row.specification.items())
    if len(specification) > SPECIFICATION_WIDTH:
        specification = specification[: SPECIFICATION_WIDTH - 1] + "…"
    shown_duration = None if duration is None else f"{duration:.3f}"
    return [row.spec_hash[:12], row.status, row.attempts, shown_duration, specification]


def _run_details(row: Row[Any]) -> str:
    fields = {
        "run": f"{row.id} of batch {row.batch!r}",
        "hash": row.spec_hash,
        "status": row.status,
        "attempts": row.attempts,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "duration_s": duration_seconds(row.started_at, row.finished_at),
        "host": row.host,
        "pid": row.pid,
        "error_type": row.error_type,
        "error_message": row.error_message,
    }
    lines = [f"{name + ':':<15}{cli_output.cell_text(value)}" for name, value in fields.items()]
    lines += ["specification:", _indented(json.dumps(row.specification, indent=2, sort_keys=True))]
    if row.traceback:
        lines += ["traceback:", _indented(row.traceback.rstrip())]
    if row.result_json is not None:
        lines += ["result:", _indented(json.dumps(row.result_json, indent=2, sort_keys=True))]
    elif row.result is not None:
        lines.append(
            f"result:        stored only as a pickle ({len(row.result)} bytes), not JSON; the CLI does not unpickle: "
            "load it in Python with runner.results() if you trust this database"
        )
    else:
        lines.append("result:        none")
    return "\n".join(lines)


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
