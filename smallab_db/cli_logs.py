"""``smallab-db logs``: print what a run wrote to standard output and error and logged, or follow it as it runs."""

from __future__ import annotations

import time
from typing import Any

import click
from sqlalchemy.engine import Row

from smallab_db.batches import run_by_hash_prefix
from smallab_db.cli import main, reading_database, url_and_last
from smallab_db.cli_output import printable
from smallab_db.cli_run import INTERRUPTED_EXIT_STATUS
from smallab_db.errors import UsageError
from smallab_db.queries import RunQueries
from smallab_db.run_output import split_dropped
from smallab_db.schema import COMPLETED, FAILED

FOLLOW_INTERVAL = 0.5  # seconds between two reads of a followed run's output


@main.command(name="logs")
@click.argument("arguments", nargs=-1, required=True, metavar="[URL] HASH_PREFIX")
@click.option("--batch", "batch", metavar="NAME", help="Look only in this batch.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing the output as it comes, until the run ends.")
def logs(arguments: tuple[str, ...], batch: str | None, follow: bool) -> None:
    """Print a run's output: what it wrote to standard output and error and logged, the last 1 MB of it.

    HASH_PREFIX is the start of the run's spec_hash, as `smallab-db runs` prints it; it is the last argument, so
    `smallab-db logs 3f2a9c` reads the default database. A running run's output is stored about every second; with
    --follow the command prints it as it comes and ends when the run completes or fails (Ctrl-C stops it sooner).

    Example: smallab-db logs results.db 3f2a9c --follow
    """
    url, hash_prefix = url_and_last(arguments, "logs", "one hash prefix", "give the URL first, then the prefix")
    with reading_database(url) as queries:
        run = run_by_hash_prefix(queries, hash_prefix, batch)
        if not follow:
            if run.output is None:
                click.echo(f"smallab-db: run {run.spec_hash[:16]} ({run.status}) has no output stored", err=True)
            else:
                click.echo(printable(run.output), nl=False)
            return
        try:
            _follow(queries, run)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(INTERRUPTED_EXIT_STATUS) from None


def _follow(queries: RunQueries, run: Row[Any]) -> None:
    """Print the run's output as it is stored, until the run completes or fails.

    Raises:
        UsageError: the run was deleted meanwhile.
    """
    name = run.spec_hash[:16]
    shown = 0  # how many characters of the run's whole output were printed, dropped ones included
    attempts = run.attempts
    while True:
        now = queries.run_output(run.id)
        if now is None:
            raise UsageError(f"run {name} was deleted while its output was followed: list the batch's runs again")
        dropped, kept = split_dropped(now.output or "")
        total = dropped + len(kept)
        if now.attempts != attempts or total < shown:
            if shown:
                click.echo(f"smallab-db: run {name} started again; its new output follows", err=True)
            shown, attempts = 0, now.attempts
        if total > shown:
            if shown < dropped:
                click.echo(f"smallab-db: {dropped - shown} characters were dropped before they were shown", err=True)
            click.echo(printable(kept[max(0, shown - dropped) :]), nl=False)
            shown = total
        if now.status in (COMPLETED, FAILED):
            click.echo(f"smallab-db: run {name} {now.status}", err=True)
            return
        time.sleep(FOLLOW_INTERVAL)
