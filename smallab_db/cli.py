"""The ``smallab-db`` command line. Errors become one clean ``Error:`` line and exit status 1, never a traceback."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import URL, Engine

from smallab_db import cli_output, export, importing, migration
from smallab_db.batches import batch_id_or_error, run_by_hash_prefix
from smallab_db.cli_errors import CleanErrorGroup
from smallab_db.database import check_sqlite_file, describe, resolve_url
from smallab_db.errors import DatabaseError, QueryError, UsageError
from smallab_db.layouts import LAYOUTS
from smallab_db.queries import RunQueries
from smallab_db.schema import COMPLETED, FAILED, STATUSES
from smallab_db.sql_query import read_only_query
from smallab_db.store import RunStore

Command = TypeVar("Command", bound=Callable[..., Any])

TABLE_WIDTH_ROWS = 1000  # `query` sets a table's column widths from its first rows, as it cannot wait for all
OUTPUT_LINES = 100  # `query` writes its output this many lines at a time


class PathParameter(click.ParamType):  # type: ignore[type-arg]  # generic only in some click versions
    """A file-system path. Unlike ``click.Path``, which hands it to ``os.stat``, a NUL character is a usage error."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if "\0" in str(value):
            self.fail(f"{value!r:.1000} holds a NUL character, which no path can hold", param, ctx)
        return Path(value)


def url_and_last(arguments: tuple[str, ...], command: str, last: str, hint: str) -> tuple[str | None, str]:
    """Split the positional arguments ``[URL] LAST`` of a command: the last one is always ``LAST``, so that a single
    argument is never taken for the URL.

    Raises:
        UsageError: more than two arguments.
    """
    if len(arguments) > 2:
        raise UsageError(f"{command} takes [URL] and {last}, but got {len(arguments)} arguments: {hint}")
    return (None, arguments[0]) if len(arguments) == 1 else (arguments[0], arguments[1])


def database_argument(command: Command) -> Command:
    """Add the optional ``[URL]`` argument: a file path or SQLAlchemy URL."""
    return click.argument("url", required=False, metavar="[URL]")(command)


batch_option = click.option("--batch", "batch", required=True, metavar="NAME", help="The batch name.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (its shape is described above).")
run_option = click.option(
    "--run", "run_prefix", metavar="PREFIX", help="Only the run whose hash starts with PREFIX, as `runs` prints it."
)


@click.group(cls=CleanErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smallab-db")
def main() -> None:
    """smallab-db: run experiments and keep every run in a SQL database.

    URL, where a command takes one, is a file path or SQLAlchemy URL; it defaults to $SMALLAB_DB, then
    ./smallab.db.

    Example: smallab-db status results.db
    """


@main.command()
@database_argument
def migrate(url: str | None) -> None:
    """Create the database, or upgrade its schema to this version of smallab-db.

    Idempotent, and safe when several processes run it at once.

    Example: smallab-db migrate results.db
    """
    resolved = database_url(url)
    revision = migration.migrate(resolved)
    click.echo(f"{cli_output.printable(describe(resolved))}: schema at revision {revision} (up to date)")


@main.command()
@database_argument
@json_option
def status(url: str | None, as_json: bool) -> None:
    """List each batch with its number of runs per status.

    With --json: a JSON array, one object per batch, {"batch": NAME, "pending": N, "running": N, "completed": N,
    "failed": N}.

    Example: smallab-db status results.db
    """
    with reading_database(url) as queries:
        rows = queries.batch_counts()
    if as_json:
        records = ({"batch": name, **{s: counts.get(s, 0) for s in STATUSES}} for name, counts in rows)
        click.echo("".join(cli_output.json_array(records)), nl=False)
        return
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
def query(arguments: tuple[str, ...], as_csv: bool, as_json: bool, timeout: str | None) -> None:
    """Run one read-only SQL query and print its rows as they arrive. Anything that would write is refused.

    The tables are batches and runs; the view run_details has one row per run with its batch name and duration.
    On PostgreSQL, a query runs as the role smallab_db_reader, which may only read those (see the docs' Querying page).
    Ctrl-C stops a query at once. A table's column widths come from its first 1,000 rows.

    Example: smallab-db query results.db "SELECT batch, status, count(*) FROM run_details GROUP BY 1, 2"
    """
    if as_csv and as_json:
        raise UsageError("choose one of --csv and --json")
    url, sql = url_and_last(arguments, "query", "one SQL statement", "quote the SQL")
    if not sql.strip():
        raise UsageError('the SQL statement is empty: give one read-only query, such as "SELECT * FROM run_details"')
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
            for chunk in cli_output.batched(lines, OUTPUT_LINES):
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


@main.command()
@database_argument
@batch_option
@click.option("--status", "status_filter", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--full", is_flag=True, help="Show each whole specification, not only the keys that vary.")
@json_option
def runs(url: str | None, batch: str, status_filter: str | None, full: bool, as_json: bool) -> None:
    """List the runs of a batch: hash prefix, status, attempts, duration, and the keys of the specification that
    vary within the batch, which tell its runs apart; a last line gives the keys that are the same in every run.
    --full shows each whole specification instead.

    With --json: a JSON array, one object per run, as `smallab-db show --json` prints it without the details:
    run_id, spec_hash, status, attempts, started_at, finished_at, duration_s, error_type, specification, result
    (the JSON copy of the result, as runner.results() returns it) and result_pickle_bytes.

    Example: smallab-db runs results.db --batch doubling --status failed
    """
    with reading_database(url) as queries:
        batch_id = batch_id_or_error(queries, batch)
        if as_json:
            records = (cli_output.run_record(row, False) for row in queries.iter_run_summaries(batch_id, status_filter))
            for chunk in cli_output.batched(cli_output.json_array(records), OUTPUT_LINES):
                click.echo(chunk, nl=False)
            return
        varying = cli_output.VaryingKeys()
        shown = []
        for row in queries.iter_run_summaries(batch_id):  # every run, so that keys vary over the whole batch
            varying.add(row.specification)
            if status_filter in (None, row.status):
                shown.append(row)
    if not shown:
        click.echo(f"no {status_filter or ''} runs in batch {batch!r}".replace("  ", " "))
        return
    described = cli_output.cell_text if full else varying.text
    lines = [cli_output.run_line(row, described(row.specification)) for row in shown]
    click.echo(cli_output.table(["hash", "status", "attempts", "duration_s", "specification"], lines))
    if not full and (same := varying.same_in_every_run()):
        click.echo(f"the same in every run: {same} (--full shows whole specifications)")


@main.command()
@click.argument("arguments", nargs=-1, required=True, metavar="[URL] HASH_PREFIX")
@click.option("--batch", "batch", metavar="NAME", help="Look only in this batch.")
@json_option
def show(arguments: tuple[str, ...], batch: str | None, as_json: bool) -> None:
    """Print one run in full: specification, status, timestamps, host, error, traceback and JSON result.

    HASH_PREFIX is the start of the run's spec_hash, as `smallab-db runs` prints it; it is the last argument, so
    `smallab-db show 3f2a9c` reads the default database. The CLI never unpickles.

    With --json: one JSON object, with the fields of `smallab-db runs --json` and batch, created_at, host, pid,
    error_message and traceback.

    Example: smallab-db show results.db 3f2a9c
    """
    url, hash_prefix = url_and_last(arguments, "show", "one hash prefix", "give the URL first, then the prefix")
    with reading_database(url) as queries:
        row = run_by_hash_prefix(queries, hash_prefix, batch)
    if as_json:
        click.echo(json.dumps(cli_output.run_record(row, True), indent=1, ensure_ascii=False))
    else:
        click.echo(cli_output.run_details(row))


@main.command(name="export")
@database_argument
@batch_option
@click.option("--to", "folder", required=True, type=PathParameter(), help="The folder to write into.")
@click.option("--layout", type=click.Choice(sorted(LAYOUTS)), default="seed", show_default=True, help="Tree layout.")
def export_command(url: str | None, batch: str, folder: Path, layout: str) -> None:
    """Write a batch's runs as a folder tree: smallab's (seed) or smallab 2.x's (smallab2).

    Exporting again rewrites only what changed. Results are unpickled to be written: export only databases you trust.

    Example: smallab-db export results.db --batch doubling --to experiment_runs --layout smallab2
    """
    with reading_database(url) as queries:
        written = export.export_batch(queries, batch, folder, layout)
    click.echo(f"exported batch {batch!r} to {cli_output.printable(str(written))} ({layout} layout)")


@main.command(name="import")
@click.argument("folder", type=PathParameter())
@batch_option
@database_argument
def import_command(folder: Path, batch: str, url: str | None) -> None:
    """Read a batch folder written by smallab (either layout) into the database as completed runs.

    Importing again adds nothing; unreadable files are reported and skipped. The tree's pickles are loaded:
    import only trees you trust.

    Example: smallab-db import experiment_runs/doubling --batch doubling results.db
    """
    with writing_database(url, create=True) as store:
        report = importing.import_tree(store, folder, batch)
    for unreadable in report.unreadable:
        click.echo(f"skipped {cli_output.printable(str(unreadable.path))}: {unreadable.reason}", err=True)
    click.echo(
        f"imported {report.imported} run(s) into batch {batch!r} ({report.layout} layout); "
        f"{report.already_present} already there, {len(report.unreadable)} unreadable file(s) skipped"
    )


@main.command()
@database_argument
@batch_option
@run_option
@click.option(
    "--status",
    type=click.Choice([FAILED, COMPLETED]),
    default=FAILED,
    show_default=True,
    help="Put back the runs with this status: completed runs them again.",
)
def retry(url: str | None, batch: str, run_prefix: str | None, status: str) -> None:
    """Put a batch's failed runs (or completed runs, or one run) back to pending, so that the next run of the batch
    executes them.

    Example: smallab-db retry results.db --batch doubling --run 3f2a9c
    """
    with writing_database(url) as store:
        batch_id = batch_id_or_error(store, batch)
        run = None if run_prefix is None else run_by_hash_prefix(store, run_prefix, batch)
        if run is not None and run.status != status:
            raise UsageError(
                f"run {run.spec_hash[:12]} of batch {batch!r} is {run.status}, not {status}: "
                + ("add --status completed to run it again" if run.status == COMPLETED else "nothing to put back")
            )
        count = store.requeue(batch_id, status, None if run is None else run.id)
    click.echo(f"{count} {status} run(s) of batch {batch!r} are pending again")


@main.command()
@database_argument
@batch_option
@run_option
@click.option("--status", type=click.Choice(STATUSES), help="Delete only the runs with this status.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(url: str | None, batch: str, run_prefix: str | None, status: str | None, yes: bool) -> None:
    """Delete a batch and all its runs, or only some of its runs (--run, --status), after confirmation.

    Example: smallab-db rm results.db --batch doubling --status failed --yes
    """
    with writing_database(url) as store:
        batch_id = batch_id_or_error(store, batch)
        if run_prefix is None and status is None:
            total = sum(dict(store.batch_counts())[batch].values())
            if not yes:
                click.confirm(f"Delete batch {batch!r} and its {total} run(s)?", abort=True)
            click.echo(f"deleted batch {batch!r} and its {store.delete_batch(batch_id)} run(s)")
            return
        run = None if run_prefix is None else run_by_hash_prefix(store, run_prefix, batch)
        if run is not None and status not in (None, run.status):
            raise UsageError(f"run {run.spec_hash[:12]} of {batch!r} is {run.status}, not {status}: nothing deleted")
        if run is None:
            assert status is not None  # --run or --status was given
            chosen = f"the {store.count(batch_id, status)} {status} run(s)"
        else:
            chosen = f"run {run.spec_hash[:12]}"
        if not yes:
            click.confirm(f"Delete {chosen} of batch {batch!r}?", abort=True)
        deleted = store.delete_runs(batch_id, status, None if run is None else run.id)
    click.echo(f"deleted {deleted} run(s) of batch {batch!r}")


@contextmanager
def reading_database(url: str | None) -> Iterator[RunQueries]:
    """Open the database read-only for a command, and close it afterwards: nothing is created, changed or migrated,
    and the schema must be the one this smallab-db uses.

    Raises:
        DatabaseError: a SQLite file that does not exist, or a database that cannot be read.
        SchemaError: the schema is not this smallab-db's.
    """
    engine = _open_engine(url, writable=False, create=False)
    try:
        yield RunQueries(engine)
    finally:
        engine.dispose()


@contextmanager
def writing_database(url: str | None, create: bool = False) -> Iterator[RunStore]:
    """Open the database to write for a command, and close it afterwards; an older SQLite schema is upgraded, as the
    runner does.

    Args:
        url: the URL argument.
        create: create the database when it does not exist yet.

    Raises:
        DatabaseError: a SQLite file that does not exist, unless ``create``.
        SchemaError: the schema is newer than this smallab-db, or an older non-SQLite one needs ``migrate``.
    """
    engine = _open_engine(url, writable=True, create=create)
    try:
        yield RunStore(engine)
    finally:
        engine.dispose()


def _open_engine(url: str | None, writable: bool, create: bool) -> Engine:
    """Resolve the ``[URL]`` argument and open its engine (see :func:`migration.open_engine`).

    Raises:
        DatabaseError: a SQLite file that does not exist, unless ``create``.
    """
    resolved = database_url(url)
    check_sqlite_file(resolved, writable=False)  # a path too long, say: the same error as the Python API's
    if not create and resolved.get_backend_name() == "sqlite" and not Path(resolved.database or "").exists():
        raise DatabaseError(
            f"no database at {describe(resolved)!r}: check the path, or create one with "
            f"`smallab-db migrate {describe(resolved)}`"
        )
    return migration.open_engine(resolved, writable=writable)


def database_url(url: str | None) -> URL:
    """Resolve the ``[URL]`` argument (None: ``$SMALLAB_DB``, else ``./smallab.db``).

    Raises:
        DatabaseError: the URL cannot be parsed, or it is a SQLite path holding a NUL character.
    """
    resolved = resolve_url(url)
    path = resolved.database if resolved.get_backend_name() == "sqlite" else None
    if path and "\0" in path:
        raise DatabaseError(
            f"the database path {path!r:.1000} holds a NUL character, which no file name can: remove it"
        )
    return resolved


from smallab_db import cli_logs, cli_report, cli_run, cli_watch  # noqa: E402, F401  (register their commands on main)
