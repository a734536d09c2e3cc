"""Checks shared by the CLI tests."""

from __future__ import annotations

from click.testing import Result


def assert_clean_error(result: Result, internal: bool = False) -> str:
    """Check that a command failed the way a user error must: status 1, one ``Error:`` line, no traceback.

    Args:
        result: the click test result.
        internal: expect the ``Error: internal error`` line of a bug instead of a user error's.

    Returns:
        The error line.
    """
    # An exception click did not handle also gives exit code 1 under CliRunner, but as result.exception.
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}\n{result.output}"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert lines[0].startswith("Error: internal error") == internal, result.stderr
    return lines[0]
