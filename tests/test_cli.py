"""Tests of the ``smallab-db`` command line: ``migrate`` and ``status``, URL defaults, and clean user errors."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import processes
import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result
from workloads import FailOnOdd, Square

from smallab_db import Experiment, ExperimentRunner
from smallab_db.cli import main
from smallab_db.migration import HEAD_REVISION
from smallab_db.schema import STATUSES

SCRIPT = Path(sys.executable).parent / "smallab-db"

# The environment variable is removed (None) unless a test sets it, so the developer's own $SMALLAB_DB never leaks in.
NO_ENV: dict[str, str | None] = {"SMALLAB_DB": None}


def invoke(*arguments: str, env: dict[str, str | None] | None = None) -> Result:
    """Run the click group in-process with ``arguments``.

    Args:
        arguments: the command line after ``smallab-db``.
        env: environment overrides; defaults to unsetting ``$SMALLAB_DB``.

    Returns:
        The click test result (stdout and stderr captured separately).
    """
    return CliRunner().invoke(main, list(arguments), env=NO_ENV if env is None else env)


def run_script(*arguments: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``smallab-db`` console script in a real subprocess.

    Args:
        arguments: the command line after ``smallab-db``.
        cwd: the working directory (never the repository root).
        env: extra environment variables; ``$SMALLAB_DB`` is removed unless given here.

    Returns:
        The finished process with its text output.
    """
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    environment.update(env or {})
    return processes.run([str(SCRIPT), *arguments], cwd=cwd, env=environment, text=True, timeout=120)


def run_batch(database: str, name: str, count: int, experiment: Experiment) -> None:
    """Run batch ``name`` with seeds ``0 … count-1`` in this process and close the runner.

    Args:
        database: a path or URL.
        name: the batch name.
        count: how many specifications.
        experiment: the experiment to run.
    """
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run(name, [{"seed": seed} for seed in range(count)], experiment, show_progress=False)


def parse_status(output: str) -> dict[str, dict[str, int]]:
    """Parse the table that ``status`` prints into ``{batch: {status: count}}``, checking its header.

    Args:
        output: the standard output of ``status``.

    Returns:
        The counts per status of each batch, in printed order.
    """
    lines = output.splitlines()
    assert lines[0].split() == ["batch", *STATUSES], output
    assert set(lines[1].replace(" ", "")) == {"-"}, output
    table: dict[str, dict[str, int]] = {}
    for line in lines[2:]:
        *name, pending, running, completed, failed = line.split()
        table[" ".join(name)] = {
            "pending": int(pending),
            "running": int(running),
            "completed": int(completed),
            "failed": int(failed),
        }
    return table


def stored_revisions(path: Path) -> list[str]:
    """Return every row of ``smallab_db_version`` of the SQLite file at ``path``."""
    connection = sqlite3.connect(path)
    try:
        return [row[0] for row in connection.execute("SELECT version_num FROM smallab_db_version")]
    finally:
        connection.close()


def table_names(path: Path) -> set[str]:
    """Return the names of the tables of the SQLite file at ``path``."""
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def dump_rows(path: Path) -> list[tuple[object, ...]]:
    """Return every row of ``batches`` and ``runs`` of the SQLite file at ``path``, in id order."""
    connection = sqlite3.connect(path)
    try:
        batches = connection.execute("SELECT * FROM batches ORDER BY id").fetchall()
        runs = connection.execute("SELECT * FROM runs ORDER BY id").fetchall()
    finally:
        connection.close()
    return [("batches", *row) for row in batches] + [("runs", *row) for row in runs]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Return the name and bytes of every file below ``folder``: the test of "left untouched"."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_clean_process_error(process: subprocess.CompletedProcess[str]) -> str:
    """Like :func:`assert_clean_error`, for a real subprocess of the console script."""
    assert process.returncode == 1, process.stdout + process.stderr
    assert "Traceback" not in process.stdout + process.stderr, process.stderr
    assert process.stdout == ""
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("Error: "), process.stderr
    return lines[0]


def newer_schema_database(path: Path) -> None:
    """Create a smallab-db database at ``path`` and mark it with a revision this smallab-db does not know."""
    assert invoke("migrate", str(path)).exit_code == 0
    connection = sqlite3.connect(path)
    try:
        connection.execute("UPDATE smallab_db_version SET version_num = 'ffffffffffff'")
        connection.commit()
    finally:
        connection.close()
    assert stored_revisions(path) == ["ffffffffffff"]


# -- migrate -----------------------------------------------------------------------------------------------------


def test_migrate_creates_a_new_sqlite_file_at_the_head_revision(tmp_path: Path) -> None:
    """``migrate`` builds a new file whose version table holds the head revision, and says so."""
    path = tmp_path / "results.db"
    result = invoke("migrate", str(path))
    assert result.exit_code == 0, result.output
    assert path.is_file()
    assert stored_revisions(path) == [HEAD_REVISION]
    assert {"batches", "runs", "smallab_db_version"} <= table_names(path)
    assert "alembic_version" not in table_names(path)
    assert result.stdout == f"{path}: schema at revision {HEAD_REVISION} (up to date)\n"


def test_migrate_is_idempotent_and_keeps_the_runs(tmp_path: Path) -> None:
    """A second ``migrate`` succeeds with the same output and changes no stored run."""
    path = tmp_path / "results.db"
    first = invoke("migrate", str(path))
    assert first.exit_code == 0, first.output
    run_batch(str(path), "odd", 5, FailOnOdd())
    before = dump_rows(path)
    assert len(before) == 1 + 5

    second = invoke("migrate", str(path))
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout
    assert stored_revisions(path) == [HEAD_REVISION]
    assert dump_rows(path) == before


def test_migrate_a_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path names a file in the current directory."""
    monkeypatch.chdir(tmp_path)
    result = invoke("migrate", "relative.db")
    assert result.exit_code == 0, result.output
    assert stored_revisions(tmp_path / "relative.db") == [HEAD_REVISION]


# -- status ------------------------------------------------------------------------------------------------------


def test_status_on_an_empty_database_says_no_batches_yet(tmp_path: Path) -> None:
    """A migrated database without batches prints ``no batches yet``."""
    path = tmp_path / "results.db"
    assert invoke("migrate", str(path)).exit_code == 0
    result = invoke("status", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "no batches yet\n"


def test_status_lists_each_batch_with_its_counts_per_status(tmp_path: Path) -> None:
    """After a batch with failures (odd seeds) and one without, each batch shows its counts, in creation order."""
    path = tmp_path / "results.db"
    run_batch(str(path), "odd seeds fail", 5, FailOnOdd())  # seeds 0, 2, 4 complete; 1, 3 fail
    run_batch(str(path), "squares", 2, Square())
    result = invoke("status", str(path))
    assert result.exit_code == 0, result.output
    table = parse_status(result.stdout)
    assert list(table) == ["odd seeds fail", "squares"]
    assert table["odd seeds fail"] == {"pending": 0, "running": 0, "completed": 3, "failed": 2}
    assert table["squares"] == {"pending": 0, "running": 0, "completed": 2, "failed": 0}


def test_status_counts_change_after_the_failures_are_retried(tmp_path: Path) -> None:
    """Re-running the batch with an experiment that succeeds turns the failed runs into completed ones."""
    path = tmp_path / "results.db"
    run_batch(str(path), "odd", 4, FailOnOdd())
    assert parse_status(invoke("status", str(path)).stdout)["odd"]["failed"] == 2
    run_batch(str(path), "odd", 4, Square())
    assert parse_status(invoke("status", str(path)).stdout)["odd"] == {
        "pending": 0,
        "running": 0,
        "completed": 4,
        "failed": 0,
    }


def test_status_does_not_change_a_migrated_file(tmp_path: Path) -> None:
    """``status`` only reads: the runs stored in the file are the same afterwards."""
    path = tmp_path / "results.db"
    run_batch(str(path), "odd", 3, FailOnOdd())
    before = dump_rows(path)
    assert invoke("status", str(path)).exit_code == 0
    assert dump_rows(path) == before


def test_status_closes_the_database(tmp_path: Path) -> None:
    """``status`` closes its connections before returning, as ``migrate`` does.

    SQLite removes a WAL database's ``-wal`` and ``-shm`` side files when its last connection closes, so their
    presence right after the command returned shows a connection left open (until garbage collection).
    """
    path = tmp_path / "results.db"
    assert invoke("migrate", str(path)).exit_code == 0
    assert snapshot(tmp_path).keys() == {"results.db"}
    result = invoke("status", str(path))
    assert result.exit_code == 0, result.output
    assert sorted(snapshot(tmp_path)) == ["results.db"]


# -- where the database is ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate"])
def test_without_url_the_environment_variable_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """With ``$SMALLAB_DB`` set and no URL, the command uses the database it names, not ``./smallab.db``."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "from_env.db"
    result = invoke(command, env={"SMALLAB_DB": str(path)})
    assert result.exit_code == 0, result.output
    assert stored_revisions(path) == [HEAD_REVISION]
    assert not (tmp_path / "smallab.db").exists()


def test_status_without_url_reads_the_batches_of_the_environment_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``status`` with ``$SMALLAB_DB`` (set with monkeypatch) shows that database's batches."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "from_env.db"
    run_batch(str(path), "odd", 3, FailOnOdd())
    monkeypatch.setenv("SMALLAB_DB", str(path))
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert parse_status(result.stdout) == {"odd": {"pending": 0, "running": 0, "completed": 2, "failed": 1}}


def test_an_explicit_url_wins_over_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL argument is used even when ``$SMALLAB_DB`` names another database."""
    monkeypatch.chdir(tmp_path)
    result = invoke("migrate", str(tmp_path / "explicit.db"), env={"SMALLAB_DB": str(tmp_path / "from_env.db")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "explicit.db").is_file()
    assert not (tmp_path / "from_env.db").exists()
    assert not (tmp_path / "smallab.db").exists()


@pytest.mark.parametrize("command", ["migrate"])
def test_without_url_or_environment_variable_smallab_db_in_the_working_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """With neither a URL nor ``$SMALLAB_DB``, the database is ``./smallab.db``."""
    monkeypatch.delenv("SMALLAB_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 0, result.output
    assert stored_revisions(tmp_path / "smallab.db") == [HEAD_REVISION]


def test_the_installed_script_runs_on_the_default_database(tmp_path: Path) -> None:
    """The real console script, in a subprocess: migrate, run a batch, and status on ``./smallab.db``."""
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"
    migrated = run_script("migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    database = tmp_path / "smallab.db"
    assert migrated.stdout == f"{database}: schema at revision {HEAD_REVISION} (up to date)\n"
    assert stored_revisions(database) == [HEAD_REVISION]

    empty = run_script("status", cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (0, "no batches yet\n"), empty.stderr

    run_batch(str(database), "odd", 5, FailOnOdd())
    listed = run_script("status", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert parse_status(listed.stdout) == {"odd": {"pending": 0, "running": 0, "completed": 3, "failed": 2}}


def test_the_installed_script_uses_the_environment_variable(tmp_path: Path) -> None:
    """The real console script reads ``$SMALLAB_DB`` from its environment."""
    path = tmp_path / "from_env.db"
    process = run_script("migrate", cwd=tmp_path, env={"SMALLAB_DB": str(path)})
    assert process.returncode == 0, process.stderr
    assert stored_revisions(path) == [HEAD_REVISION]
    assert not (tmp_path / "smallab.db").exists()


# -- user errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path, command: str) -> None:
    """A text file is refused with one ``Error:`` line naming it; no byte or sibling file changes."""
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n")
    before = snapshot(tmp_path)
    line = assert_clean_error(invoke(command, str(path)))
    assert str(path) in line
    assert "not a SQLite database" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_a_path_in_a_missing_directory_is_refused(tmp_path: Path, command: str) -> None:
    """A path whose directory does not exist is refused, and the directory is not created."""
    missing = tmp_path / "no" / "such" / "directory"
    line = assert_clean_error(invoke(command, str(missing / "results.db")))
    assert str(missing) in line
    assert not (tmp_path / "no").exists()
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_a_schema_newer_than_this_smallab_db_is_refused_and_left_untouched(tmp_path: Path, command: str) -> None:
    """A database at an unknown revision is refused, naming the revision, and its bytes stay the same."""
    path = tmp_path / "newer.db"
    newer_schema_database(path)
    before = path.read_bytes()
    line = assert_clean_error(invoke(command, str(path)))
    assert "ffffffffffff" in line
    # In-process, `status` leaves its connection open (see test_status_closes_the_database), so SQLite's -wal and
    # -shm side files may still exist here; the subprocess test below compares the whole directory.
    assert path.read_bytes() == before
    assert {file.name for file in tmp_path.iterdir()} <= {path.name, f"{path.name}-wal", f"{path.name}-shm"}
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    assert stored_revisions(path) == ["ffffffffffff"]


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_an_unloadable_url_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """A URL naming a dialect SQLAlchemy does not have is one ``Error:`` line, not a traceback."""
    monkeypatch.chdir(tmp_path)
    line = assert_clean_error(invoke(command, "nosuchdialect://x"))
    assert "nosuchdialect" in line
    assert snapshot(tmp_path) == {}


def test_an_unparseable_url_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL that SQLAlchemy cannot parse at all is one ``Error:`` line."""
    monkeypatch.chdir(tmp_path)
    line = assert_clean_error(invoke("status", "://nothing"))
    assert "://nothing" in line
    assert snapshot(tmp_path) == {}


def test_an_in_memory_sqlite_url_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-memory SQLite URL cannot hold runs across connections and is refused."""
    monkeypatch.chdir(tmp_path)
    assert_clean_error(invoke("migrate", "sqlite://"))
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_the_installed_script_reports_a_bad_file_without_traceback(tmp_path: Path, command: str) -> None:
    """The real console script: a text file is one ``Error:`` line on stderr, exit status 1, file unchanged."""
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    before = snapshot(tmp_path)
    line = assert_clean_process_error(run_script(command, str(path), cwd=tmp_path))
    assert "not a SQLite database" in line
    assert snapshot(tmp_path) == before


def test_the_installed_script_refuses_a_newer_schema_without_traceback(tmp_path: Path) -> None:
    """The real console script: ``status`` on a newer schema is refused and the file bytes are unchanged."""
    path = tmp_path / "newer.db"
    newer_schema_database(path)
    before = snapshot(tmp_path)
    line = assert_clean_process_error(run_script("status", str(path), cwd=tmp_path))
    assert "ffffffffffff" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_the_installed_script_reports_an_unloadable_url_without_traceback(tmp_path: Path, command: str) -> None:
    """The real console script: ``nosuchdialect://x`` is one ``Error:`` line and exit status 1."""
    line = assert_clean_process_error(run_script(command, "nosuchdialect://x", cwd=tmp_path))
    assert "nosuchdialect" in line
    assert snapshot(tmp_path) == {}


# -- PostgreSQL --------------------------------------------------------------------------------------------------


def test_migrate_and_status_on_postgresql(postgres_url: str) -> None:
    """``migrate`` then ``status`` on a fresh PostgreSQL database, before and after a batch with failures."""
    first = invoke("migrate", postgres_url)
    assert first.exit_code == 0, first.output
    assert f"schema at revision {HEAD_REVISION} (up to date)" in first.stdout
    second = invoke("migrate", postgres_url)
    assert (second.exit_code, second.stdout) == (0, first.stdout)

    empty = invoke("status", postgres_url)
    assert (empty.exit_code, empty.stdout) == (0, "no batches yet\n"), empty.output

    run_batch(postgres_url, "odd", 5, FailOnOdd())
    listed = invoke("status", postgres_url)
    assert listed.exit_code == 0, listed.output
    assert parse_status(listed.stdout) == {"odd": {"pending": 0, "running": 0, "completed": 3, "failed": 2}}


def test_status_on_postgresql_through_the_environment_variable(postgres_url: str, tmp_path: Path) -> None:
    """The real console script finds a PostgreSQL database through ``$SMALLAB_DB``."""
    assert invoke("migrate", postgres_url).exit_code == 0
    process = run_script("status", cwd=tmp_path, env={"SMALLAB_DB": postgres_url})
    assert (process.returncode, process.stdout) == (0, "no batches yet\n"), process.stderr
    assert not (tmp_path / "smallab.db").exists()


@pytest.mark.parametrize(
    "arguments",
    [["status"], ["runs", "--batch", "b"], ["show", "abc"], ["retry", "--batch", "b"], ["rm", "--batch", "b", "--yes"]],
)
def test_commands_that_read_refuse_a_missing_database_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str]
) -> None:
    """Only ``migrate`` and ``import`` create a database; the others say there is none."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*arguments, str(tmp_path / "typo.db"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "no database at" in result.stderr and "smallab-db migrate" in result.stderr
    assert list(tmp_path.iterdir()) == []
