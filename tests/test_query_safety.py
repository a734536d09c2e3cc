"""``smallab-db query`` cannot write, run programs or read outside the database, even as a PostgreSQL superuser;
Ctrl-C and ``--timeout`` stop a runaway query; rows stream instead of being held in memory.

Attacks run in-process through click's ``CliRunner`` (a failure must be a clean exit, not a crash); interrupts,
time limits and memory are measured on the installed script in a real process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import processes
import psycopg
import pytest
import sqlalchemy
from alembic import command
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result
from conftest import POSTGRES_ADMIN
from workloads import Square

from smallab_db import ExperimentRunner
from smallab_db.alembic_migrations import alembic_config
from smallab_db.cli import main
from smallab_db.database import create_engine, resolve_url
from smallab_db.migration import migrate, migration_transaction
from smallab_db.postgres_reader import QUERY_FUNCTION, READER_ROLE, install

SCRIPT = Path(sys.executable).parent / "smallab-db"
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
STOP_SECONDS = 20  # the promise is "within a second"; a busy machine gets a 20x margin


def build(database: str) -> None:
    """Run a batch of four runs into ``database`` (creating it)."""
    with ExperimentRunner(database) as runner:
        runner.run("squares", [{"seed": seed} for seed in range(4)], Square(), show_progress=False)


def invoke(*arguments: str) -> Result:
    """Run the click group in-process, without the developer's ``$SMALLAB_DB``."""
    return CliRunner().invoke(main, list(arguments), env={"SMALLAB_DB": None})


def script_environment() -> dict[str, str]:
    """This process's environment without ``$SMALLAB_DB`` and ``$PYTHONPATH``."""
    return {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "PYTHONPATH")}


def stored_rows(database: str) -> list[tuple[Any, ...]]:
    """Every column of every batch and run of ``database`` (a SQLite path or a PostgreSQL URL)."""
    url = database if "://" in database else f"sqlite:///{database}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            batches = connection.exec_driver_sql("SELECT * FROM batches ORDER BY id").all()
            runs = connection.exec_driver_sql("SELECT * FROM runs ORDER BY id").all()
    finally:
        engine.dispose()
    return [("batch", *row) for row in batches] + [("run", *row) for row in runs]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def admin_rows(sql: str, database: str = "postgres", *parameters: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` as the superuser ``postgres`` on ``database`` (autocommit) and return its rows, if any."""
    with psycopg.connect(POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as connection:
        cursor = connection.execute(sql, parameters or None)
        return cursor.fetchall() if cursor.description else []


def database_name(url: str) -> str:
    """The database name at the end of a PostgreSQL URL."""
    return url.rsplit("/", 1)[1]


# -- SQLite ------------------------------------------------------------------------------------------------------


def file_hashes(path: Path) -> dict[str, str]:
    """The SHA-256 of the database file and of its -wal file."""
    wal = path.with_name(path.name + "-wal")
    return {file.name: hashlib.sha256(file.read_bytes()).hexdigest() for file in (path, wal) if file.exists()}


@pytest.mark.parametrize(
    "statement",
    ["PRAGMA wal_checkpoint", "PRAGMA main.wal_checkpoint", "PRAGMA optimize"],  # no argument, which let them in
)
def test_sqlite_pragmas_that_write_are_refused_and_the_files_keep_their_bytes(tmp_path: Path, statement: str) -> None:
    """With changes waiting in the WAL (a writer holds them, without automatic checkpoints), a pragma that would
    move them into the database or otherwise write is refused, and neither file changes by a byte; the pragmas
    that only report still answer."""
    path = tmp_path / "runs.db"
    build(str(path))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE runs SET host = 'elsewhere'")
        before, hashes = stored_rows(str(path)), file_hashes(path)
        assert path.with_name("runs.db-wal").stat().st_size > 0

        line = assert_clean_error(invoke("query", str(path), statement))

        assert "read-only" in line
        assert file_hashes(path) == hashes
        assert stored_rows(str(path)) == before
        table_info = invoke("query", str(path), "PRAGMA table_info(batches)", "--csv")
        assert [line.split(",")[1] for line in table_info.stdout.splitlines()] == [
            "name",
            "id",
            "name",
            "created_at",
            "hash_scheme",
        ], table_info.output
        assert file_hashes(path) == hashes
    finally:
        writer.close()


# -- PostgreSQL: the reader role and its function ----------------------------------------------------------------


def test_the_migration_gives_the_function_to_a_reader_role_that_may_only_read(postgres_url: str) -> None:
    """Migration 0003 creates the NOLOGIN role and the security-definer function it owns, which PUBLIC may not run;
    the role may select batches, runs and run_details only. Downgrading removes both from the database (the
    cluster-wide role stays), and upgrading again restores them."""
    url = resolve_url(postgres_url)
    migrate(url)
    name = database_name(postgres_url)

    def installed() -> list[tuple[Any, ...]]:
        return admin_rows(
            "SELECT pg_get_userbyid(p.proowner), p.prosecdef, "
            "EXISTS (SELECT FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0) AS public_may_run "
            f"FROM pg_proc AS p WHERE p.proname = '{QUERY_FUNCTION}'",
            name,
        )

    def readable() -> list[str]:
        rows = admin_rows(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S') "
            f"AND has_table_privilege('{READER_ROLE}', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') "
            "ORDER BY 1",
            name,
        )
        return [relation for (relation,) in rows]

    assert installed() == [(READER_ROLE, True, False)]
    assert readable() == ["batches", "run_details", "runs"]
    assert admin_rows(
        f"SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = '{READER_ROLE}'", name
    ) == [(False, False, False)]
    engine = create_engine(url)
    try:
        with migration_transaction(engine) as connection:
            command.downgrade(alembic_config(connection), "0002")
        assert installed() == [] and readable() == []
        with migration_transaction(engine) as connection:
            command.upgrade(alembic_config(connection), "head")
    finally:
        engine.dispose()
    assert installed() == [(READER_ROLE, True, False)]
    assert readable() == ["batches", "run_details", "runs"]


def test_two_databases_creating_the_role_at_once_both_succeed(postgres_url: str) -> None:
    """The role is the cluster's: when two databases' migrations create it at the same moment, the second waits
    for the first and then goes on with the role the first created."""
    try:
        admin_rows(f"DROP ROLE IF EXISTS {READER_ROLE}")
    except psycopg.errors.DependentObjectsStillExist:
        pytest.skip(f"another database of the cluster uses the role {READER_ROLE}, which must not exist here")
    other = f"smallab_test_{uuid.uuid4().hex[:12]}"
    admin_rows(f'CREATE DATABASE "{other}"')
    engines = [create_engine(resolve_url(url)) for url in (postgres_url, postgres_url.rsplit("/", 1)[0] + f"/{other}")]
    try:
        for engine in engines:  # the tables and the view, which the function's role is given
            with migration_transaction(engine) as connection:
                command.upgrade(alembic_config(connection), "0002")
        first, second = (engine.connect() for engine in engines)
        first.begin()
        assert install(first)  # creates the role, uncommitted
        second.begin()
        second_pid = second.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        outcome: list[bool] = []
        thread = threading.Thread(target=lambda: outcome.append(install(second)))
        thread.start()
        wait_until(
            lambda: (
                admin_rows("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", "postgres", second_pid)
                == [("Lock",)]
            ),
            "the second CREATE ROLE to wait for the first",
        )
        first.commit()
        thread.join(timeout=60)
        second.commit()
        assert outcome == [True]
        owner = f"SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = '{QUERY_FUNCTION}'"
        for database in (database_name(postgres_url), other):
            assert admin_rows(owner, database) == [(READER_ROLE,)]
        first.close()
        second.close()
    finally:
        for engine in engines:
            engine.dispose()
        admin_rows(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


# -- PostgreSQL, connected as the superuser postgres -------------------------------------------------------------

NOT_A_QUERY = "not a query"
ATTACKS = {
    "copy-to-program": ("COPY runs TO PROGRAM 'touch {folder}/pwned'", NOT_A_QUERY),
    "copy-to-file": ("COPY runs TO '{folder}/out'", NOT_A_QUERY),
    "copy-to-stdout": ("COPY runs TO STDOUT", NOT_A_QUERY),
    "do-copy-to-program": ("DO $$ BEGIN EXECUTE 'COPY runs TO PROGRAM ''touch {folder}/pwned'''; END $$", NOT_A_QUERY),
    "do-copy-to-file": ("DO $$ BEGIN EXECUTE 'COPY runs TO ''{folder}/out'''; END $$", NOT_A_QUERY),
    "checkpoint": ("CHECKPOINT", NOT_A_QUERY),
    "read-file": ("SELECT pg_read_file('/etc/hostname')", "permission denied for function pg_read_file"),
    "list-directory": ("SELECT * FROM pg_ls_dir('.')", "permission denied for function pg_ls_dir"),
    "reload-configuration": ("SELECT pg_reload_conf()", "permission denied for function pg_reload_conf"),
    "physical-slot": ("SELECT pg_create_physical_replication_slot('{slot}')", "superuser or replication role"),
    "logical-slot": (
        "SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')",
        "superuser or replication role",
    ),
    "role-escalation": (
        "SELECT set_config('role', 'postgres', true) AS r, "
        "query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, true, '') AS x",
        'cannot set parameter "role" within security-definer function',
    ),
    "session-authorization-escalation": (
        "SELECT set_config('session_authorization', 'postgres', true) AS r, "
        "query_to_xml('SELECT pg_read_file(''/etc/hostname'')', true, true, '') AS x",
        'cannot set parameter "session_authorization" within security-definer function',
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_superuser_s_query_cannot_write_run_programs_or_read_files(
    postgres_url: str, tmp_path: Path, attack: str
) -> None:
    """Each attack is one ``Error:`` line giving the server's own refusal; no file appears, no replication slot
    outlives the query, and every row stays as it was."""
    build(postgres_url)
    before = stored_rows(postgres_url)
    slot = f"smallab_test_{uuid.uuid4().hex[:12]}"
    statement, refusal = ATTACKS[attack]
    try:
        line = assert_clean_error(invoke("query", postgres_url, statement.format(folder=tmp_path, slot=slot)))

        assert refusal in line
        assert sorted(tmp_path.iterdir()) == []
        assert stored_rows(postgres_url) == before
        assert admin_rows("SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", "postgres", slot) == []
    finally:
        drop = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s"
        admin_rows(drop, "postgres", slot)


def test_a_superuser_s_query_cannot_terminate_another_connection(postgres_url: str) -> None:
    """``pg_terminate_backend`` of another superuser connection is refused, and that connection lives on."""
    build(postgres_url)
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as victim:
        pid = victim.info.backend_pid

        line = assert_clean_error(invoke("query", postgres_url, f"SELECT pg_terminate_backend({pid})"))

        assert "must be a superuser to terminate superuser process" in line
        assert victim.execute("SELECT 1").fetchall() == [(1,)]


@pytest.fixture
def plain_user(postgres_url: str) -> Iterator[str]:
    """A login role without CREATEROLE that owns the test database; yields its URL for that database."""
    user = f"smallab_test_user_{uuid.uuid4().hex[:8]}"
    name = database_name(postgres_url)
    admin_rows(f"CREATE ROLE {user} LOGIN")
    admin_rows(f"ALTER DATABASE {name} OWNER TO {user}")
    try:
        yield postgres_url.replace("postgres@", f"{user}@")
    finally:
        admin_rows(f"REASSIGN OWNED BY {user} TO postgres", name)
        admin_rows(f"DROP OWNED BY {user}", name)
        admin_rows(f"ALTER DATABASE {name} OWNER TO postgres")
        admin_rows(f"DROP ROLE {user}")


def test_a_user_who_may_not_create_roles_gets_the_schema_and_a_query_that_names_the_fix(
    postgres_url: str, plain_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Migrating as a user who may not create the role (or hand it the function) builds the schema and warns;
    ``query`` then refuses, naming ``smallab-db migrate`` as a user allowed to create roles. Once a superuser has
    run it, the user is told to get EXECUTE granted; once granted, the query works."""
    migrate(resolve_url(plain_user))
    assert "could not be created" in caplog.text and "CREATEROLE" in caplog.text
    build(plain_user)

    line = assert_clean_error(invoke("query", plain_user, "SELECT count(*) FROM runs"))
    assert f"has no function {QUERY_FUNCTION}(text)" in line and "smallab-db migrate" in line and "CREATEROLE" in line

    assert invoke("migrate", postgres_url).exit_code == 0
    user = plain_user.split("://", 1)[1].split("@", 1)[0]
    line = assert_clean_error(invoke("query", plain_user, "SELECT count(*) FROM runs"))
    assert f"GRANT EXECUTE ON FUNCTION {QUERY_FUNCTION}(text) TO {user}" in line

    admin_rows(f"GRANT EXECUTE ON FUNCTION {QUERY_FUNCTION}(text) TO {user}", database_name(postgres_url))
    result = invoke("query", plain_user, "SELECT count(*) AS n, current_user AS reader FROM runs", "--csv")
    assert result.exit_code == 0 and result.stdout == f"n,reader\n4,{READER_ROLE}\n", result.output


# -- stopping: Ctrl-C and --timeout ------------------------------------------------------------------------------


def start_query(database: str, sql: str) -> subprocess.Popen[str]:
    """Start the installed script on ``query database sql`` with its output piped."""
    return processes.spawn(
        [str(SCRIPT), "query", database, sql],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_environment(),
    )


def has_open(process: subprocess.Popen[str], path: Path) -> bool:
    """Tell whether ``process`` holds ``path`` open (it has then imported everything and connected)."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{process.pid}/fd").iterdir())
    except OSError:  # a descriptor closed while we looked
        return False


def assert_interrupted_cleanly(process: subprocess.Popen[str]) -> None:
    """Send Ctrl-C's SIGINT and check that the process exits promptly with one ``Error:`` line."""
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=STOP_SECONDS)
    assert process.returncode == 1, err
    assert out == "" and "Traceback" not in err
    assert err.startswith("Error: interrupted (Ctrl-C)") and len(err.splitlines()) == 1, err


def test_ctrl_c_stops_a_runaway_query_on_sqlite(tmp_path: Path) -> None:
    """A recursive query that would count forever stops at Ctrl-C (SQLite runs it in C, where Python's
    KeyboardInterrupt cannot reach by itself)."""
    path = tmp_path / "runs.db"
    build(str(path))
    process = start_query(str(path), RUNAWAY)
    wait_until(lambda: has_open(process, path), "the query to open the database")
    time.sleep(0.5)  # well inside the runaway statement
    assert_interrupted_cleanly(process)


def test_ctrl_c_stops_a_runaway_query_on_postgresql(postgres_url: str) -> None:
    """A query sleeping on the server stops at Ctrl-C, and the server stops running it."""
    build(postgres_url)
    name = database_name(postgres_url)
    sleeping = f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}' AND wait_event = 'PgSleep'"
    process = start_query(postgres_url, "SELECT pg_sleep(600)")
    wait_until(lambda: admin_rows(sleeping) != [], "the query to sleep on the server")
    assert_interrupted_cleanly(process)
    wait_until(lambda: admin_rows(sleeping) == [], "the server to stop the query", seconds=STOP_SECONDS)


def test_timeout_stops_a_runaway_query(database_url: str) -> None:
    """``--timeout 1`` stops a query that would run forever, with one ``Error:`` line naming the limit and the fix."""
    build(database_url)
    process = processes.run(
        [str(SCRIPT), "query", database_url, RUNAWAY, "--timeout", "1"],
        env=script_environment(),
        text=True,
        timeout=60,
    )
    assert process.returncode == 1, process.stderr
    assert process.stdout == "" and "Traceback" not in process.stderr
    [line] = process.stderr.splitlines()
    assert line.startswith("Error: the query ran past its time limit of 1 s (--timeout)")
    assert "give a larger --timeout" in line


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", ""])
def test_timeout_must_be_a_positive_number_of_seconds(sqlite_path: str, value: str) -> None:
    """A ``--timeout`` that is not a positive, finite number is one ``Error:`` line naming the value."""
    build(sqlite_path)
    line = assert_clean_error(invoke("query", sqlite_path, "SELECT 1", "--timeout", value))
    assert f"--timeout takes a positive number of seconds, but got {value!r}" in line


# -- streaming ---------------------------------------------------------------------------------------------------

PADDING = "p" * 300
MEASURE_PEAK = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    finished = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE)
print(finished.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.buffer.write(finished.stderr)
"""


def numbered_rows(count: int) -> str:
    """A query of ``count`` rows: ``x`` from 1 and a 300-character ``padding``."""
    return (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {count}) "
        f"SELECT x, '{PADDING}' AS padding FROM c"
    )


def query_to_file(database: str, sql: str, output_format: str, output: Path) -> int:
    """Run the script's query with its output into ``output`` and return its peak resident memory in bytes."""
    measured = processes.run(
        [sys.executable, "-c", MEASURE_PEAK, str(output), str(SCRIPT), "query", database, sql, output_format],
        env=script_environment(),
        text=True,
        timeout=600,
    )
    returncode, peak_kib = measured.stdout.split()
    assert returncode == "0", measured.stderr
    return int(peak_kib) * 1024


def test_a_table_takes_its_column_widths_from_its_first_1000_rows(sqlite_path: str) -> None:
    """The table streams too: its columns are as wide as the header and the first 1,000 rows need, and a longer
    cell further down widens only its own line."""
    build(sqlite_path)
    sql = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1001) "
        "SELECT CASE WHEN x = 1001 THEN 'a much longer cell' ELSE 'short' END AS word, x FROM c"
    )
    result = invoke("query", sqlite_path, sql)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["word   x", "-----  ----", "short  1"]
    assert lines[1001:] == ["short  1000", "a much longer cell  1001"]


@pytest.mark.parametrize("output_format", ["--csv", "--json"])
def test_a_large_result_streams_complete_in_little_memory(
    database_url: str, tmp_path: Path, output_format: str
) -> None:
    """400,000 rows of 300 characters come out complete (CSV lines, one valid JSON array), and the process's peak
    memory grows, over that of a 10-row query, by less than a tenth of what holding the rows as Python tuples would
    take (about 170 MB; streaming takes a few MB, however many rows there are)."""
    build(database_url)
    count = 400_000
    holding = count * (sys.getsizeof((count, PADDING)) + sys.getsizeof(count) + sys.getsizeof(PADDING))
    output = tmp_path / "output"
    small = query_to_file(database_url, numbered_rows(10), output_format, output)
    large = query_to_file(database_url, numbered_rows(count), output_format, output)

    assert large - small < holding / 10, (large, small, holding)
    if output_format == "--csv":
        expected = hashlib.sha256(b"x,padding\n")
        for x in range(1, count + 1):
            expected.update(f"{x},{PADDING}\n".encode())
        assert hashlib.sha256(output.read_bytes()).hexdigest() == expected.hexdigest()
    else:
        with output.open(encoding="utf-8") as file:
            rows = json.load(file)
        assert len(rows) == count
        assert all(row == {"x": x, "padding": PADDING} for x, row in enumerate(rows, start=1))
    output.unlink()
