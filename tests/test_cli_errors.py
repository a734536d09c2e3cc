"""How the command line reports errors: one ``Error:`` line naming the fix, an internal error that asks for a report
(or, with ``$SMALLAB_DB_DEBUG``, raises), and paths that are not UTF-8, which work where SQLite allows it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import processes
import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner
from workloads import FailOnOdd, Square

from smallab_db import DatabaseError, ExperimentRunner, specification_hash
from smallab_db import cli as cli_module
from smallab_db.cli import main

SCRIPT = Path(sys.executable).parent / "smallab-db"


def build(database: Path) -> None:
    """A completed batch ``done`` and a batch with failures ``broken``, closed afterwards."""
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run("done", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
        runner.run("broken", [{"seed": seed} for seed in range(4)], FailOnOdd(), show_progress=False)


def run_script(*arguments: str | bytes, cwd: Path) -> tuple[int, str, str]:
    """Run the installed script as a user would (no debugging) with a standard output that accepts only UTF-8;
    return its status and output, with bytes that are not UTF-8 shown as ``\\x..`` escapes."""
    environment = {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "SMALLAB_DB_DEBUG")}
    environment["PYTHONIOENCODING"] = "utf-8:strict"
    process = processes.run([str(SCRIPT), *arguments], cwd=cwd, env=environment, timeout=120)
    return (
        process.returncode,
        process.stdout.decode("utf-8", "backslashreplace"),
        process.stderr.decode("utf-8", "backslashreplace"),
    )


def failing_table(*_: object) -> str:
    """Stands in for the table renderer: a bug in smallab-db."""
    raise RuntimeError("a bug")


def test_an_unexpected_exception_is_one_line_asking_for_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``$SMALLAB_DB_DEBUG``, a bug prints one ``Error: internal error`` line naming the exception and how
    to get its traceback, and exits with status 1."""
    build(tmp_path / "runs.db")
    monkeypatch.setattr(cli_module.cli_output, "table", failing_table)
    monkeypatch.delenv("SMALLAB_DB_DEBUG")

    line = assert_clean_error(CliRunner().invoke(main, ["status", str(tmp_path / "runs.db")]), internal=True)

    assert line.startswith("Error: internal error (RuntimeError: a bug)")
    assert "please report it" in line and "SMALLAB_DB_DEBUG=1" in line


def test_with_the_debug_variable_an_unexpected_exception_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``$SMALLAB_DB_DEBUG`` set (as the tests set it), the bug itself propagates, traceback and all."""
    build(tmp_path / "runs.db")
    monkeypatch.setattr(cli_module.cli_output, "table", failing_table)
    monkeypatch.setenv("SMALLAB_DB_DEBUG", "1")

    result = CliRunner().invoke(main, ["status", str(tmp_path / "runs.db")])

    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "a bug"


@pytest.mark.parametrize("command", ["runs", "retry", "rm", "show", "logs", "export", "watch", "report"])
def test_a_batch_name_that_is_not_utf8_is_one_error_line_and_changes_nothing(tmp_path: Path, command: str) -> None:
    """``--batch $'caf\\xe9'`` (Latin-1 bytes): one ``Error:`` line naming the name and the fix, status 1, the
    database's bytes unchanged and nothing exported."""
    database = tmp_path / "runs.db"
    build(database)
    before = database.read_bytes()
    extra = {
        "show": ["0"],
        "logs": ["0"],
        "export": ["--to", str(tmp_path / "out")],
        "rm": ["--yes"],
        "watch": ["--once"],
        "report": ["-o", str(tmp_path / "out")],
    }.get(command, [])

    status, stdout, stderr = run_script(command, str(database), *extra, "--batch", b"caf\xe9", cwd=tmp_path)

    assert (status, stdout) == (1, ""), stderr
    assert stderr.startswith("Error: the batch name 'caf\\udce9' is not valid UTF-8 text") and stderr.count("\n") == 1
    assert "give the name in UTF-8" in stderr
    assert database.read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_importing_into_a_batch_name_that_is_not_utf8_is_one_error_line_and_changes_nothing(tmp_path: Path) -> None:
    """``import TREE --batch $'caf\\xe9'`` of a readable tree: a clean error, and no batch is created."""
    database = tmp_path / "runs.db"
    build(database)
    with ExperimentRunner(database) as runner:
        tree = runner.export("done", tmp_path / "tree")
    before = database.read_bytes()

    status, stdout, stderr = run_script("import", str(tree), "--batch", b"caf\xe9", str(database), cwd=tmp_path)

    assert (status, stdout) == (1, "") and stderr.startswith("Error: the batch name 'caf\\udce9'"), stderr
    assert database.read_bytes() == before


NOT_UTF8 = b"caf\xe9.db"
# Each command on a database whose file name is not UTF-8, in the order they run, and what it must print.
NOT_UTF8_COMMANDS: list[tuple[list[str | bytes], str]] = [
    (["migrate", NOT_UTF8], "caf\\udce9.db: schema at revision"),
    (["import", "{tree}", "--batch", "done", NOT_UTF8], "imported 3 run(s) into batch 'done'"),
    (["status", NOT_UTF8], "done"),
    (["runs", NOT_UTF8, "--batch", "done"], "completed"),
    (["show", NOT_UTF8, specification_hash({"seed": 1})[:10]], '"seed": 1'),
    (["query", NOT_UTF8, "SELECT count(*) AS counted FROM runs"], "counted"),
    (["export", NOT_UTF8, "--batch", "done", "--to", "out"], "exported batch 'done'"),
    (["retry", NOT_UTF8, "--batch", "done"], "0 failed run(s)"),
    (
        [
            "run",
            NOT_UTF8,
            "--batch",
            "more",
            "--experiment",
            "doubling:double",
            "--specs",
            "specs.json",
            "--no-progress",
        ],
        "completed",
    ),
    (["watch", NOT_UTF8, "--batch", "done", "--once"], "3/3"),
    (["report", NOT_UTF8, "--batch", "done", "-o", "report.html"], "wrote the report on batch 'done' (3 runs)"),
    (["logs", NOT_UTF8, specification_hash({"seed": 1})[:10], "--batch", "more"], "doubling 1\n"),
    (["rm", NOT_UTF8, "--batch", "done", "--yes"], "deleted batch 'done' and its 3 run(s)"),
]


def write_experiment(folder: Path) -> None:
    """Write the module ``doubling`` and the file ``specs.json`` that ``smallab-db run`` is given, in ``folder``."""
    (folder / "doubling.py").write_text(
        "def double(specification):\n"
        "    print('doubling', specification['seed'])\n"
        "    return {'x': 2 * specification['seed']}\n"
    )
    (folder / "specs.json").write_text('[{"seed": 1}, {"seed": 2}]')


def test_every_command_works_on_a_database_path_that_is_not_utf8(tmp_path: Path) -> None:
    """A SQLite file is opened by its own bytes: ``caf\\xe9.db`` is created, written and read by every command (the
    reading ones too), and the path is printed with the byte escaped."""
    assert {arguments[0] for arguments, _ in NOT_UTF8_COMMANDS} == set(main.commands)
    with ExperimentRunner(tmp_path / "runs.db") as runner:
        runner.run("done", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
        tree = runner.export("done", tmp_path / "tree")
    write_experiment(tmp_path)
    for arguments, expected in NOT_UTF8_COMMANDS:
        line = [str(tree) if argument == "{tree}" else argument for argument in arguments]
        status, stdout, stderr = run_script(*line, cwd=tmp_path)
        assert (status, stderr) == (0, ""), f"{arguments[0]}: {stderr}"
        assert expected in stdout, f"{arguments[0]}: {stdout}"
    assert (tmp_path / os.fsdecode(NOT_UTF8)).is_file()
    assert (tmp_path / "out" / "done" / "completed.json").is_file()


def test_an_export_folder_that_is_not_utf8_works_and_imports_back(tmp_path: Path) -> None:
    """``export --to $'out\\xe9'`` writes the tree where the bytes say, and prints the folder with the byte escaped
    (on a standard output that refuses what is not UTF-8); importing it back works."""
    database = tmp_path / "runs.db"
    build(database)

    status, stdout, stderr = run_script("export", str(database), "--batch", "done", "--to", b"out\xe9", cwd=tmp_path)

    assert (status, stderr) == (0, ""), stderr
    assert stdout == "exported batch 'done' to out\\udce9/done (seed layout)\n"
    tree = tmp_path / os.fsdecode(b"out\xe9") / "done"
    assert (tree / "completed.json").is_file()
    status, stdout, stderr = run_script("import", b"out\xe9/done", "--batch", "copy", str(database), cwd=tmp_path)
    assert (status, stderr) == (0, ""), stderr
    assert stdout.startswith("imported 3 run(s) into batch 'copy'")


@pytest.mark.parametrize("prefix", ["xyz", "", "0" * 65, "3f2a 9c"])
def test_show_refuses_a_prefix_that_is_not_hexadecimal(tmp_path: Path, prefix: str) -> None:
    """A hash prefix is 1 to 64 hexadecimal digits; anything else is a clean error naming it and the fix."""
    build(tmp_path / "runs.db")
    result = CliRunner().invoke(main, ["show", str(tmp_path / "runs.db"), prefix], env={"SMALLAB_DB": None})
    line = assert_clean_error(result)
    assert f"the hash prefix {prefix!r} is not the start of a hash" in line and "hexadecimal digits" in line


def test_a_multi_line_driver_message_becomes_one_line(tmp_path: Path) -> None:
    """PostgreSQL's "connection refused" message spans two lines; the command prints it as one."""
    status, stdout, stderr = run_script("status", "postgresql://postgres@127.0.0.1:1/none", cwd=tmp_path)
    assert (status, stdout) == (1, "") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("Error: cannot open postgresql+psycopg://postgres@127.0.0.1:1/none")


def test_a_path_too_long_for_the_file_system_names_the_fix(tmp_path: Path) -> None:
    """A 10,000-character database path: one line naming the error and the fix, status 1; through the Python API,
    the same message as a :class:`DatabaseError`."""
    status, stdout, stderr = run_script("status", "x" * 10_000, cwd=tmp_path)
    assert (status, stdout) == (1, "") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("Error: cannot open database: File name too long: ")
    assert stderr.endswith("; give a shorter path\n")
    with pytest.raises(DatabaseError) as raised:
        ExperimentRunner(tmp_path / ("x" * 10_000))
    assert str(raised.value).startswith("cannot open database: File name too long: ")
    assert str(raised.value).endswith("; give a shorter path")


# -- URLs SQLAlchemy cannot use, and PostgreSQL without its driver -----------------------------------------------

POSTGRES_SCHEME = "postgres://postgres@127.0.0.1:5432/postgres"
POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Each command with ``{url}`` for the database, in a form that would work with a usable URL.
WITH_URL = {
    "migrate": ["migrate", "{url}"],
    "status": ["status", "{url}"],
    "query": ["query", "{url}", "SELECT 1"],
    "runs": ["runs", "{url}", "--batch", "done"],
    "show": ["show", "{url}", "3f2a"],
    "logs": ["logs", "{url}", "3f2a"],
    "export": ["export", "{url}", "--batch", "done", "--to", "out"],
    "import": ["import", "{tree}", "--batch", "done", "{url}"],
    "retry": ["retry", "{url}", "--batch", "done"],
    "rm": ["rm", "{url}", "--batch", "done", "--yes"],
    "run": ["run", "{url}", "--batch", "done", "--experiment", "json:dumps", "--specs", "{tree}/specs.json"],
    "watch": ["watch", "{url}", "--once"],
    "report": ["report", "{url}", "--batch", "done", "-o", "{tree}/report.html"],
}
WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if psycopg were not installed: importing it raises ImportError
from click.testing import CliRunner
from smallab_db import ExperimentRunner, SmallabError
from smallab_db.cli import main
try:
    ExperimentRunner(sys.argv[1])
except SmallabError as error:
    print("runner:", error)
print("cli:", CliRunner().invoke(main, sys.argv[2:]).stderr.strip())
"""


def test_every_command_has_a_url_case() -> None:
    """Each command of the group is run with the URLs below."""
    assert set(WITH_URL) == set(main.commands)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported batch, for ``import``."""
    folder = tmp_path_factory.mktemp("tree")
    with ExperimentRunner(folder / "runs.db") as runner:
        runner.run("done", [{"seed": 1}], Square(), show_progress=False)
        exported = runner.export("done", folder)
    (exported / "specs.json").write_text('[{"seed": 1}]')  # for `run`, which reads it before opening the database
    return exported


@pytest.mark.parametrize("command", sorted(WITH_URL))
def test_a_postgres_scheme_gets_the_python_apis_message_naming_postgresql(tree: Path, command: str) -> None:
    """``postgres://`` (which SQLAlchemy does not know) gives every command the message ``ExperimentRunner`` gives,
    which names ``postgresql://`` and the extra to install."""
    with pytest.raises(DatabaseError) as raised:
        ExperimentRunner(POSTGRES_SCHEME)
    expected = str(raised.value)
    assert "write postgresql:// instead" in expected and "pip install 'smallab-db[postgresql]'" in expected
    line = [part.replace("{url}", POSTGRES_SCHEME).replace("{tree}", str(tree)) for part in WITH_URL[command]]
    result = CliRunner().invoke(main, line, env={"SMALLAB_DB": None})
    assert assert_clean_error(result) == f"Error: {expected}"


@pytest.mark.parametrize("command", sorted(WITH_URL))
def test_postgresql_without_psycopg_gets_the_python_apis_message_naming_the_extra(tree: Path, command: str) -> None:
    """Without psycopg, a ``postgresql://`` URL gives every command (the reading ones and ``query`` too) the
    message ``ExperimentRunner`` gives, which names the extra that installs it."""
    line = [part.replace("{url}", POSTGRESQL_URL).replace("{tree}", str(tree)) for part in WITH_URL[command]]
    process = processes.run([sys.executable, "-c", WITHOUT_PSYCOPG, POSTGRESQL_URL, *line], text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    runner_line, cli_line = process.stdout.splitlines()
    expected = runner_line.removeprefix("runner: ")
    assert "psycopg 3, is not installed" in expected and "pip install 'smallab-db[postgresql]'" in expected
    assert cli_line == f"cli: Error: {expected}"
