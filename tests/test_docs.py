"""Tests that keep the documentation from rotting: CLI help, the README's commands and examples, and the demo."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import processes
import pytest
from click.testing import CliRunner

import smallab_db
from smallab_db.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO = ROOT / "examples" / "demo.py"


def readme() -> str:
    """Return the text of README.md."""
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """Return the README's text from the heading ``title`` to the next heading of the same or a higher level.

    Args:
        title: the heading line, e.g. ``"## Python API"``.
    """
    text = readme()
    level = title.split(" ", 1)[0]
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?=^#{{1,{len(level)}}} |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no heading {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    """Return the fenced code blocks of ``language`` in ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def python_api_example() -> str:
    """Return the first ```python block under '## Python API'."""
    blocks = code_blocks(section("## Python API"), "python")
    assert blocks, "README.md has no ```python block under '## Python API'"
    return blocks[0]


def sql_example() -> tuple[str, str]:
    """Return the name and text of the README's first SQLite query: the ```sql block after the first comment line
    ``<!-- query: NAME sqlite ... -->`` (tests/test_readme_queries.py checks every query on both databases)."""
    queries = re.findall(r"^<!-- query: (\S+) ([a-z ]+?) -->\n```sql\n(.*?)^```", readme(), re.MULTILINE | re.DOTALL)
    sqlite_queries = [(name, sql) for name, dialects, sql in queries if "sqlite" in dialects.split()]
    assert sqlite_queries, "README.md has no ```sql block marked <!-- query: NAME sqlite -->"
    return sqlite_queries[0]


def subprocess_environment() -> dict[str, str]:
    """Return this process's environment without ``$SMALLAB_DB``, so examples use their documented default."""
    return {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}


def run_python_api_example(folder: Path) -> subprocess.CompletedProcess[str]:
    """Write the README's Python API example to ``folder`` and run it there in a fresh interpreter."""
    script = folder / "readme_example.py"
    script.write_text(python_api_example(), encoding="utf-8")
    return processes.run(
        [sys.executable, str(script)], cwd=folder, env=subprocess_environment(), text=True, timeout=300
    )


# -- the command line --------------------------------------------------------------------------------------------


COMMANDS = sorted(main.commands)


def test_the_group_has_commands() -> None:
    """The click group has the commands the README documents (guards the parametrisation below)."""
    assert {"migrate", "status"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    """Each command's help text is non-empty, contains 'Example:', and ``--help`` shows it."""
    command: click.Command = main.commands[name]
    assert command.help and command.help.strip()
    assert "Example:" in command.help
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout
    assert f"smallab-db {name}" in result.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    """The README mentions each command as ``smallab-db <name>``."""
    assert f"`smallab-db {name}" in readme()


# -- the README --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["pip install . && python examples/demo.py", "pip install '.[test]' && pytest"], ids=["demo", "tests"]
)
def test_the_quick_start_commands_are_present(command: str) -> None:
    """Both Quick start commands are in a ```bash block of the Quick start section, exactly."""
    blocks = code_blocks(section("## Quick start"), "bash")
    assert command in [line.strip() for block in blocks for line in block.splitlines()]


def test_the_python_api_example_runs(tmp_path: Path) -> None:
    """The README's Python API example runs for real in a fresh interpreter and creates ``results.db``."""
    process = run_python_api_example(tmp_path)
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "results.db").is_file()
    lines = process.stdout.splitlines()
    assert "6 0 0" in lines, process.stdout  # 3 seeds x 2 sizes completed, none failed, none skipped
    assert sorted(line for line in lines if line in {"2", "4", "6"}) == ["2", "2", "4", "4", "6", "6"]


def test_the_sql_example_runs_on_the_python_api_example_database(tmp_path: Path) -> None:
    """The README's first SQLite query (the mean number per size) runs on the database the README's Python
    example produced, and gives that example's means: ``seed * 2`` over seeds 1, 2, 3 is 4 for each size."""
    process = run_python_api_example(tmp_path)
    assert process.returncode == 0, process.stderr
    name, sql = sql_example()
    assert name == "mean_by_size"
    assert "'doubling'" in sql
    connection = sqlite3.connect(tmp_path / "results.db")
    try:
        rows = connection.execute(sql).fetchall()
    finally:
        connection.close()
    assert rows == [(10, 4.0), (20, 4.0)]


def test_the_demo_runs_on_the_default_database(tmp_path: Path) -> None:
    """``examples/demo.py`` runs without ``$SMALLAB_DB``, creates ``./smallab.db`` and reads results back."""
    process = processes.run(
        [sys.executable, str(DEMO)], cwd=tmp_path, env=subprocess_environment(), text=True, timeout=300
    )
    assert process.returncode == 0, process.stderr
    database = tmp_path / "smallab.db"
    assert database.is_file()
    assert f"Read back from {database}" in process.stdout
    assert "24 ran now, 0 were already completed" in process.stdout


@pytest.mark.parametrize("name", sorted(smallab_db.__all__))
def test_every_public_name_is_in_the_readme(name: str) -> None:
    """Each name in ``smallab_db.__all__`` is mentioned in the README as a whole word."""
    assert re.search(rf"\b{re.escape(name)}\b", readme()), f"{name} is not mentioned in README.md"
