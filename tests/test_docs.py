"""Tests that keep the documentation from rotting: the README and the docs site's pages, their examples and links,
the CLI reference generated from the commands' help, the Guarantees table's tests, and the demo."""

from __future__ import annotations

import ast
import html
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
DOCS = ROOT / "docs"
DEMO = ROOT / "examples" / "demo.py"
README_MAX_BYTES = 5000  # the issue that moved the reference out: joblib's README is 4 KB, optuna's 12 KB
QUICK_START = {"demo": "pip install . && python examples/demo.py", "tests": "pip install '.[test]' && pytest"}


def page(name: str) -> str:
    """Return the text of the docs page ``name`` (``"api.md"``), or of the README for ``"README.md"``."""
    path = README if name == "README.md" else DOCS / name
    return path.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """Return ``text`` from the heading ``title`` to the next heading of the same or a higher level.

    Args:
        text: a Markdown page.
        title: the heading line, e.g. ``"## Quick start"``.
    """
    level = title.split(" ", 1)[0]
    match = re.search(rf"^{re.escape(title)}\n(.*?)(?=^#{{1,{len(level)}}} |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no heading {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    """Return the fenced code blocks of ``language`` in ``text``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def marked_block(text: str, marker: str, language: str) -> str:
    """Return the ```language block right after the comment line ``<!-- marker -->``, failing if there is none."""
    match = re.search(rf"^<!-- {re.escape(marker)} -->\n```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no ```{language} block after <!-- {marker} -->"
    return match.group(1)


def python_examples() -> dict[str, str]:
    """The examples a new user copies: the README's ```python block under '## Example', and the Python API page's
    block marked ``<!-- example: api -->``."""
    readme_blocks = code_blocks(section(page("README.md"), "## Example"), "python")
    assert readme_blocks, "README.md has no ```python block under '## Example'"
    return {"readme": readme_blocks[0], "api": marked_block(page("api.md"), "example: api", "python")}


def sql_example() -> tuple[str, str]:
    """Return the name and text of the Querying page's first SQLite query: the ```sql block after the first comment
    line ``<!-- query: NAME sqlite ... -->`` (tests/test_docs_queries.py checks every query on both databases)."""
    pattern = r"^<!-- query: (\S+) ([a-z ]+?) -->\n```sql\n(.*?)^```"
    queries = re.findall(pattern, page("querying.md"), re.MULTILINE | re.DOTALL)
    sqlite_queries = [(name, sql) for name, dialects, sql in queries if "sqlite" in dialects.split()]
    assert sqlite_queries, "docs/querying.md has no ```sql block marked <!-- query: NAME sqlite -->"
    return sqlite_queries[0]


def subprocess_environment() -> dict[str, str]:
    """Return this process's environment without ``$SMALLAB_DB``, so examples use their documented default."""
    return {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}


def run_example(example: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Write a Python example to ``folder`` and run it there in a fresh interpreter."""
    script = folder / "example.py"
    script.write_text(example, encoding="utf-8")
    return processes.run(
        [sys.executable, str(script)], cwd=folder, env=subprocess_environment(), text=True, timeout=300
    )


# -- the command line --------------------------------------------------------------------------------------------


COMMANDS = sorted(main.commands)


def test_the_group_has_commands() -> None:
    """The click group has the commands the docs document (guards the parametrisation below)."""
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
def test_every_command_is_on_the_command_line_page(name: str) -> None:
    """The Command line page's table names each command as ``smallab-db <name>``."""
    assert f"`smallab-db {name}" in page("cli.md")


def test_the_command_line_page_generates_its_reference_from_the_commands() -> None:
    """The Command line page asks mkdocs-click to render the click group itself, so the reference is the help."""
    directive = page("cli.md").split("::: mkdocs-click", 1)
    assert len(directive) == 2, "docs/cli.md has no ::: mkdocs-click block"
    assert ":module: smallab_db.cli" in directive[1] and ":command: main" in directive[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built with ``mkdocs build --strict`` (a broken link or any other warning fails it)."""
    folder = tmp_path_factory.mktemp("site")
    built = processes.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return folder


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    """Every page under docs/ becomes a page of the site."""
    for source in DOCS.glob("*.md"):
        built = site / "index.html" if source.stem == "index" else site / source.stem / "index.html"
        assert built.is_file(), f"{source.name} was not built"


@pytest.mark.parametrize("name", COMMANDS)
def test_the_built_command_line_page_holds_each_commands_help(site: Path, name: str) -> None:
    """The built Command line page holds each command's usage line and every one of its options, as ``--help``
    prints them."""
    built = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    command = main.commands[name]
    usage = command.get_usage(click.Context(command, info_name=f"smallab-db {name}"))
    assert usage.removeprefix("Usage: ") in built
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert parameter.help and " ".join(parameter.help.split()) in " ".join(built.split())
            for option in parameter.opts:
                assert option in built, f"{option} of {name} is not on the Command line page"


# -- the README and the pages ------------------------------------------------------------------------------------


def test_the_readme_is_short() -> None:
    """The README says what smallab-db is, how to install and try it, and links to the docs; the reference lives
    in docs/."""
    assert len(README.read_bytes()) <= README_MAX_BYTES
    assert "docs/index.md" in page("README.md")


@pytest.mark.parametrize("name", ["README.md", *sorted(path.name for path in DOCS.glob("*.md"))])
def test_every_relative_link_leads_to_a_file(name: str) -> None:
    """Each relative Markdown link of the README and of the pages names a file that exists (mkdocs checks the pages'
    links too; GitHub shows the README's)."""
    base = ROOT if name == "README.md" else DOCS
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page(name)):
        if "://" not in target:
            assert (base / target).exists(), f"{name} links to {target}, which does not exist"


@pytest.mark.parametrize("command", list(QUICK_START.values()), ids=list(QUICK_START))
def test_the_quick_start_commands_are_present(command: str) -> None:
    """Both Quick start commands are in a ```bash block of the README's Quick start section, exactly, and on the
    home page of the docs."""
    blocks = code_blocks(section(page("README.md"), "## Quick start"), "bash")
    assert command in [line.strip() for block in blocks for line in block.splitlines()]
    assert command in [line.strip() for block in code_blocks(page("index.md"), "bash") for line in block.splitlines()]


@pytest.mark.parametrize("example", ["readme", "api"])
def test_the_python_examples_run(tmp_path: Path, example: str) -> None:
    """The README's example and the Python API page's run for real in a fresh interpreter and create
    ``results.db``; running again runs nothing."""
    process = run_example(python_examples()[example], tmp_path)
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "results.db").is_file()
    lines = process.stdout.splitlines()
    assert "6 0 0" in lines, process.stdout  # 3 seeds x 2 sizes completed, none failed, none skipped
    again = run_example(python_examples()[example], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 0 6" in again.stdout.splitlines(), again.stdout


def test_the_api_example_calls_its_hook_for_each_run(tmp_path: Path) -> None:
    """The Python API page's example prints each result's number from its completion hook."""
    process = run_example(python_examples()["api"], tmp_path)
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert sorted(line for line in lines if line in {"2", "4", "6"}) == ["2", "2", "4", "4", "6", "6"]


def test_the_sql_example_runs_on_the_python_api_example_database(tmp_path: Path) -> None:
    """The Querying page's first SQLite query (the mean number per size) runs on the database the Python API page's
    example produced, and gives that example's means: ``seed * 2`` over seeds 1, 2, 3 is 4 for each size."""
    process = run_example(python_examples()["api"], tmp_path)
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
def test_every_public_name_is_on_the_python_api_page(name: str) -> None:
    """Each name in ``smallab_db.__all__`` is mentioned on the Python API page as a whole word."""
    assert re.search(rf"\b{re.escape(name)}\b", page("api.md")), f"{name} is not mentioned in docs/api.md"


# -- the Guarantees table ----------------------------------------------------------------------------------------


def guaranteed_tests() -> list[str]:
    """Every ``tests/…py`` and ``tests/…py::test_name`` the Guarantees page names as proof."""
    return sorted(set(re.findall(r"`(tests/[\w/]+\.py(?:::\w+)?)`", page("guarantees.md"))))


def test_the_guarantees_table_names_its_proofs() -> None:
    """Each row of the Guarantees table names at least one test file (guards the parametrisation below)."""
    rows = [line for line in page("guarantees.md").splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 15
    for row in rows:
        assert re.search(r"`tests/[\w/]+\.py", row), f"this promise names no test: {row[:120]}"


@pytest.mark.parametrize("reference", guaranteed_tests())
def test_every_test_the_guarantees_name_exists(reference: str) -> None:
    """The file each promise names exists, and so does the test function it names."""
    path, _, function = reference.partition("::")
    assert (ROOT / path).is_file(), f"{path} does not exist"
    if function:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert function in defined, f"{path} has no test {function}"
