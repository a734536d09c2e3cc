"""``smallab-db query`` cannot write, run programs or read outside the database, even as a PostgreSQL superuser:
on PostgreSQL, migration 0003 gives it a role that may only read and a function that runs statements as that role.

Attacks run in-process through click's ``CliRunner`` (a failure must be a clean exit, not a crash).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from alembic import command
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result
from conftest import POSTGRES_ADMIN
from workloads import Square

from smallab_db import ExperimentRunner
from smallab_db.cli import main
from smallab_db.database import create_engine, resolve_url
from smallab_db.migration import alembic_config, migrate, migration_transaction
from smallab_db.postgres_reader import QUERY_FUNCTION, READER_ROLE, install


def build(database: str) -> None:
    """Run a batch of four runs into ``database`` (creating it)."""
    with ExperimentRunner(database) as runner:
        runner.run("squares", [{"seed": seed} for seed in range(4)], Square(), show_progress=False)


def invoke(*arguments: str) -> Result:
    """Run the click group in-process, without the developer's ``$SMALLAB_DB``."""
    return CliRunner().invoke(main, list(arguments), env={"SMALLAB_DB": None})


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
            "name", "id", "name", "created_at", "hash_scheme"
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
            lambda: admin_rows("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", "postgres", second_pid)
            == [("Lock",)],
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
