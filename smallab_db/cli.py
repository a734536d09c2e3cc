"""The ``smallab-db`` command line. Errors become one clean ``Error:`` line and exit status 1, never a traceback."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import URL, Row

from smallab_db import cli_output, export, importing, migration
from smallab_db.batches import batch_id_or_error
from smallab_db.database import describe, resolve_url
from smallab_db.errors import DatabaseError, QueryError, SmallabError, UsageError, describe_os_error
from smallab_db.layouts import LAYOUTS
from smallab_db.results import duration_seconds
from smallab_db.schema import STATUSES
from smallab_db.sql_query import read_only_query
from smallab_db.store import RunStore

Command = TypeVar("Command", bound=Callable[..., Any])

SPECIFICATION_WIDTH = 60
DEBUG_ENV = "SMALLAB_DB_DEBUG"
HASH_PREFIX = re.compile(r"[0-9a-fA-F]{1,64}")
TABLE_WIDTH_ROWS = 1000  # `query` sets a table's column widths from its first rows, as it cannot wait for all
OUTPUT_LINES = 100  # `query` writes its output this many lines at a time


class CleanErrorGroup(click.Group):
    """A command group whose commands fail with one ``Error: …`` line and exit status 1, never a traceback.

    Errors a user can fix show what to do: a :class:`SmallabError`, an operating-system error (a path too long, a
    full disk), and text that is not UTF-8 (an argument, ``$SMALLAB_DB`` or a file name in another encoding, which
    reaches Python as lone surrogates). Any other exception is a bug: it prints one ``Error: internal error`` line
    asking for a report, unless ``$SMALLAB_DB_DEBUG`` is set; then it propagates with its traceback (the tests set
    it, so that no bug hides behind that line).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click reports these itself
        except Exception as error:
            message = _user_error_message(error)
            if message is None:
                if os.environ.get(DEBUG_ENV):
                    raise
                message = (
                    f"internal error ({type(error).__name__}: {error}); this is a bug in smallab-db: please report "
                    f"it with the command and what it prints when run again with {DEBUG_ENV}=1"
                )
            raise click.ClickException(_one_line(message)) from error


def _user_error_message(error: Exception) -> str | None:
    """The message of an error the user can fix, or None for a bug."""
    if isinstance(error, SmallabError):
        return str(error)
    if isinstance(error, OSError):
        return describe_os_error(error)
    if isinstance(error, UnicodeEncodeError) and _is_surrogate(error.object[error.start : error.end]):
        return (
            f"{error.object!r:.160} is not valid UTF-8 text: a byte that is not UTF-8 (in an argument, $SMALLAB_DB "
            "or a file name) reaches Python as a lone surrogate, which smallab-db cannot pass on: give it in UTF-8, "
            "or rename the file"
        )
    return None


def _is_surrogate(text: str) -> bool:
    return any("\ud800" <= character <= "\udfff" for character in text)


def _one_line(message: str) -> str:
    """Join a multi-line message (a database driver's, say) into one line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


class PathParameter(click.ParamType):
    """A file-system path. Unlike ``click.Path``, which hands it to ``os.stat``, a NUL character is a usage error."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if "\0" in str(value):
            self.fail(f"{value!r:.1000} holds a NUL character, which no path can hold", param, ctx)
        return Path(value)


def database_argument(command: Command) -> Command:
    """Add the optional ``[URL]`` argument: a file path or SQLAlchemy URL."""
    return click.argument("url", required=False, metavar="[URL]")(command)


batch_option = click.option("--batch", "batch", required=True, metavar="NAME", help="The batch name.")


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
    click.echo(f"{describe(resolved)}: schema at revision {revision} (up to date)")


@main.command()
@database_argument
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
    if not sql.strip():
        raise UsageError("the SQL statement is empty: give one read-only query, such as \"SELECT * FROM run_details\"")
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
def show(url: str | None, hash_prefix: str, batch: str | None) -> None:
    """Print one run in full: specification, status, timestamps, host, error, traceback and JSON result.

    HASH_PREFIX is the start of the run's spec_hash, as `smallab-db runs` prints it. The CLI never unpickles.

    Example: smallab-db show results.db 3f2a9c
    """
    with opened(url, "read") as store:
        if not HASH_PREFIX.fullmatch(hash_prefix):
            raise UsageError(
                f"the hash prefix {hash_prefix!r:.80} is not the start of a hash: give 1 to 64 hexadecimal digits "
                "(0-9, a-f), as `smallab-db runs` prints them"
            )
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
@click.option("--to", "folder", required=True, type=PathParameter(), help="The folder to write into.")
@click.option("--layout", type=click.Choice(sorted(LAYOUTS)), default="seed", show_default=True, help="Tree layout.")
def export_command(url: str | None, batch: str, folder: Path, layout: str) -> None:
    """Write a batch's runs as a folder tree: smallab's (seed) or smallab 2.x's (smallab2).

    Exporting again rewrites only what changed. Results are unpickled to be written: export only databases you trust.

    Example: smallab-db export results.db --batch doubling --to experiment_runs --layout smallab2
    """
    with opened(url, "read") as store:
        written = export.export_batch(store, batch, folder, layout)
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
    with opened(url, "create") as store:
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
    resolved = database_url(url)
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


def database_url(url: str | None) -> URL:
    """Resolve the ``[URL]`` argument (None: ``$SMALLAB_DB``, else ``./smallab.db``).

    Raises:
        DatabaseError: the URL cannot be parsed, or it is a SQLite path holding a NUL character or bytes that are
            not UTF-8 (a reading command opens SQLite files by their UTF-8 name, so such a file could be created but
            not read).
    """
    resolved = resolve_url(url)
    path = resolved.database if resolved.get_backend_name() == "sqlite" else None
    if path and "\0" in path:
        raise DatabaseError(
            f"the database path {path!r:.1000} holds a NUL character, which no file name can: remove it"
        )
    if path and _is_surrogate(path):
        raise DatabaseError(
            f"the database path {path!r:.1000} is not valid UTF-8 (a byte that is not UTF-8 reaches Python as a lone "
            "surrogate), and smallab-db opens SQLite files by their UTF-8 name: rename the file, or point a "
            "symbolic link with a UTF-8 name at it"
        )
    return resolved


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


from smallab_db import cli_run  # noqa: E402, F401  (registers `smallab-db run` on main)
