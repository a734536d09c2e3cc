"""``smallab-db watch``: a live terminal view of batches, read from the database alone, so that it shows a batch
spread over many machines. The screen is drawn with curses, from the standard library."""

from __future__ import annotations

import curses
import os
import sys
from collections.abc import Callable

import click

from smallab_db import cli_output
from smallab_db.batches import batch_id_or_error
from smallab_db.cli import database_argument, database_url, main, reading_database
from smallab_db.database import describe
from smallab_db.errors import TransientDatabaseError, UsageError
from smallab_db.records import utc_now
from smallab_db.sweep_snapshot import Snapshot, snapshot_from_rows, snapshot_statement
from smallab_db.watch_view import FAILURE, TITLE, Line, screen

REFRESH_MILLISECONDS = 1000  # between reads; waiting for a key in between costs no CPU
QUIT_KEYS = {ord("q"), ord("Q")}


@main.command()
@database_argument
@click.option("--batch", "batch", metavar="NAME", help="Only this batch [default: the 20 newest batches].")
@click.option("--once", is_flag=True, help="Print the view once, as plain text, and exit.")
def watch(url: str | None, batch: str | None, once: bool) -> None:
    """Show batches live: per batch done/total, failed, running, the rate over the last minute and the ETA; each
    running run with its host, elapsed time and progress (where the experiment reports it); the newest failures
    with their error types.

    It reads the database alone, once a second, in one query, so it shows the runs of every machine sharing a
    batch. q or Ctrl-C quits. --once prints the view once instead (as in a script, or without a terminal).

    Example: smallab-db watch results.db --batch doubling
    """
    with reading_database(url) as queries:
        batch_id = None if batch is None else batch_id_or_error(queries, batch)
        title = f"smallab-db watch {cli_output.printable(describe(database_url(url)))}"

        def read() -> Snapshot:
            now = utc_now()
            return snapshot_from_rows(queries.read(snapshot_statement(batch_id, now)), now)

        if once:
            click.echo("\n".join(line.text for line in screen(read(), title)))
            return
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError("watch needs a terminal to draw on: run it in one, or add --once to print the view once")
        _show_live(read, f"{title}  (q or Ctrl-C quits)")


def _show_live(read: Callable[[], Snapshot], title: str) -> None:
    """Redraw until q or Ctrl-C, then give the terminal back as it was.

    Raises:
        UsageError: curses cannot drive this terminal.
    """
    try:
        curses.wrapper(_loop, read, title)
    except KeyboardInterrupt:
        return
    except curses.error as error:
        raise UsageError(
            f"cannot draw on this terminal (TERM={os.environ.get('TERM', '')!r}: {error}): set TERM to your "
            "terminal's type, such as xterm-256color, or add --once to print the view once"
        ) from None


def _loop(window: curses.window, read: Callable[[], Snapshot], title: str) -> None:
    """Draw a fresh view every second; return when q is pressed."""
    styles = _styles()
    _hide_cursor()
    window.timeout(REFRESH_MILLISECONDS)
    while True:
        try:
            lines = screen(read(), title)
        except TransientDatabaseError as error:  # the server restarting, say: show it and try again
            lines = [Line(title, TITLE), Line(f"{error} (retrying)", FAILURE)]
        _draw(window, lines, styles)
        if window.getch() in QUIT_KEYS:
            return


def _draw(window: curses.window, lines: list[Line], styles: dict[str, int]) -> None:
    """Replace the screen's text with ``lines``, cut to the window's size."""
    height, width = window.getmaxyx()
    window.erase()
    encoding = window.encoding  # the terminal's: what it cannot show (a batch name in another script) becomes ?
    for row, line in enumerate(lines[:height]):
        text = line.text.encode(encoding, "replace").decode(encoding)
        try:
            window.addnstr(row, 0, text, max(width - 1, 0), styles.get(line.style, curses.A_NORMAL))
        except curses.error:  # a window too small for even one character
            pass
    window.refresh()


def _styles() -> dict[str, int]:
    """Bold titles, and failures in red where the terminal has colours."""
    styles = {TITLE: curses.A_BOLD, FAILURE: curses.A_NORMAL}
    if curses.has_colors():
        curses.use_default_colors()
        curses.init_pair(1, curses.COLOR_RED, -1)
        styles[FAILURE] = curses.color_pair(1)
    return styles


def _hide_cursor() -> None:
    try:
        curses.curs_set(0)
    except curses.error:  # a terminal that cannot hide it
        pass
