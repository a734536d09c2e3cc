"""How the command line reports errors: one ``Error:`` line naming the fix and exit status 1, never a traceback."""

from __future__ import annotations

import os
from typing import Any

import click

from smallab_db import cli_output
from smallab_db.errors import SmallabError, describe_os_error

DEBUG_ENV = "SMALLAB_DB_DEBUG"


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
            raise click.ClickException(cli_output.printable(_one_line(message))) from error


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
