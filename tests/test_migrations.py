"""The schema comes from the Alembic migrations: creation, idempotence, concurrency and refusals."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import processes
import pytest
import sqlalchemy as sa
from alembic import command
from workloads import Square

from smallab_db import DatabaseError, ExperimentRunner, SchemaError, alembic_migrations
from smallab_db.alembic_migrations import alembic_config, migrations_directory
from smallab_db.database import create_engine, resolve_url
from smallab_db.migration import HEAD_REVISION, migrate, open_engine
from smallab_db.schema import VERSION_TABLE

REPOSITORY = Path(__file__).resolve().parent.parent


def stored_revision(path: str) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute(f"SELECT version_num FROM {VERSION_TABLE}")]


def test_a_new_file_is_built_by_the_migrations(sqlite_path: str) -> None:
    ExperimentRunner(sqlite_path).close()
    assert stored_revision(sqlite_path) == [HEAD_REVISION]
    with sqlite3.connect(sqlite_path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert tables == {"batches", "runs", "checkpoints", "registrations", VERSION_TABLE}
    assert journal == "wal"


def test_models_and_migrations_agree(database_url: str) -> None:
    url = resolve_url(database_url)
    migrate(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        command.check(alembic_config(connection))  # raises if autogenerate finds any difference
    engine.dispose()


def test_the_revision_opening_needs_is_the_head_of_the_migrations() -> None:
    assert HEAD_REVISION == alembic_migrations.head()


OPEN_AND_RUN = """
import sys
from smallab_db import ExperimentRunner
runner = ExperimentRunner(sys.argv[1])
runner.run("opened", [{"seed": 1}], lambda specification: {"x": specification["seed"]}, show_progress=False)
runner.close()
print(sorted(name for name in sys.modules if name.split(".")[0] in ("alembic", "mako")))
"""


def test_a_database_at_the_head_is_opened_and_run_without_importing_alembic(sqlite_path: str) -> None:
    new = processes.run([sys.executable, "-c", OPEN_AND_RUN, sqlite_path], check=True, timeout=120, text=True)
    assert "alembic" in new.stdout  # building the schema needs the migrations
    at_head = processes.run([sys.executable, "-c", OPEN_AND_RUN, sqlite_path], check=True, timeout=120, text=True)
    assert at_head.stdout == "[]\n"
    assert ExperimentRunner(sqlite_path).results("opened") == [{"specification": {"seed": 1}, "result": {"x": 1}}]


def test_a_database_that_records_several_revisions_is_refused_and_left_untouched(sqlite_path: str) -> None:
    ExperimentRunner(sqlite_path).close()
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('0007')")
    before = Path(sqlite_path).read_bytes()
    refused = rf"database {re.escape(sqlite_path)} records several schema revisions in {VERSION_TABLE} \(0007, 0008\)"
    with pytest.raises(SchemaError, match=rf"{refused}.*keep only"):
        ExperimentRunner(sqlite_path)
    with pytest.raises(SchemaError, match=refused):  # read-only, as the CLI's reading commands open it
        open_engine(resolve_url(sqlite_path), writable=False)
    assert Path(sqlite_path).read_bytes() == before


def test_migrate_is_idempotent_and_keeps_data(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("kept", [{"seed": 1}], Square(), show_progress=False)
    runner.close()
    assert migrate(resolve_url(sqlite_path)) == HEAD_REVISION
    assert migrate(resolve_url(sqlite_path)) == HEAD_REVISION
    assert stored_revision(sqlite_path) == [HEAD_REVISION]
    assert ExperimentRunner(sqlite_path).results("kept") == [{"specification": {"seed": 1}, "result": {"square": 1}}]


def test_a_newer_schema_is_refused_and_left_untouched(sqlite_path: str) -> None:
    ExperimentRunner(sqlite_path).close()
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'fffffffffff0'")
    before = Path(sqlite_path).read_bytes()
    with pytest.raises(SchemaError, match="revision fffffffffff0, which is newer than this smallab-db.*upgrade"):
        ExperimentRunner(sqlite_path)
    with pytest.raises(SchemaError, match="newer"):
        migrate(resolve_url(sqlite_path))
    assert Path(sqlite_path).read_bytes() == before


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="is not a SQLite database.*left untouched"):
        ExperimentRunner(str(path))
    with pytest.raises(DatabaseError, match="is not a SQLite database"):
        migrate(resolve_url(str(path)))
    assert path.read_bytes() == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["notes.db"]


def test_a_database_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="directory .*missing.* does not exist; create it first"):
        ExperimentRunner(str(tmp_path / "missing" / "runs.db"))
    assert not (tmp_path / "missing").exists()


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(DatabaseError, match="in-memory"):
        ExperimentRunner("sqlite://")


def test_an_empty_schema_on_another_tool_s_database_is_added_beside_its_tables(sqlite_path: str) -> None:
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('someone-elses')")
    ExperimentRunner(sqlite_path).run("shared", [{"seed": 2}], Square(), show_progress=False)
    with sqlite3.connect(sqlite_path) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [("someone-elses",)]
    assert stored_revision(sqlite_path) == [HEAD_REVISION]


def test_alembic_runs_the_migrations_from_a_checkout(tmp_path: Path) -> None:
    path = tmp_path / "checkout.db"
    processes.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(REPOSITORY / "alembic.ini"),
            "-x",
            f"database={path}",
            "upgrade",
            "head",
        ],
        check=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert stored_revision(str(path)) == [HEAD_REVISION]


def test_the_migrations_ship_inside_the_wheel(tmp_path: Path) -> None:
    processes.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPOSITORY)],
        check=True,
        cwd=tmp_path,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("smallab_db-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "smallab_db").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert {
        "smallab_db/migrations/env.py",
        "smallab_db/migrations/script.py.mako",
        "smallab_db/migrations/versions/0001_initial_schema.py",
        "smallab_db/py.typed",
    } <= names
    assert (migrations_directory() / "env.py").is_file()


def test_sqlite_connections_use_the_documented_settings(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    with runner.engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragma == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 120_000, "foreign_keys": 1}
    runner.close()


def build_at_revision(url: str, revision: str) -> None:
    """Build a database at an older revision, as an older smallab-db would have left it."""
    engine = create_engine(resolve_url(url))
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
    engine.dispose()


def test_an_older_sqlite_schema_is_upgraded_when_opened(sqlite_path: str) -> None:
    build_at_revision(sqlite_path, "0001")
    assert stored_revision(sqlite_path) == ["0001"]
    runner = ExperimentRunner(sqlite_path)
    runner.run("upgraded", [{"seed": 3}], Square(), show_progress=False)
    runner.close()
    assert stored_revision(sqlite_path) == [HEAD_REVISION]
    with sqlite3.connect(sqlite_path) as connection:
        assert connection.execute("SELECT batch, status FROM run_details").fetchall() == [("upgraded", "completed")]


def test_an_older_postgresql_schema_asks_for_migrate(postgres_url: str) -> None:
    build_at_revision(postgres_url, "0001")
    with pytest.raises(SchemaError, match="is at revision 0001 but this smallab-db needs .*run `smallab-db migrate"):
        ExperimentRunner(postgres_url)
    assert migrate(resolve_url(postgres_url)) == HEAD_REVISION
    ExperimentRunner(postgres_url).run("after-migrate", [{"seed": 1}], Square(), show_progress=False)


def down_and_up(database_url: str, revision: str, check_down: Callable[[sa.Connection], None]) -> None:
    """Run a batch "kept", take the schema down to ``revision``, ``check_down`` it there, and upgrade it to head."""
    with ExperimentRunner(database_url) as runner:
        runner.run("kept", [{"seed": 2}], Square(), show_progress=False)
    engine = create_engine(resolve_url(database_url))
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)
    with engine.begin() as connection:
        check_down(connection)
        command.upgrade(alembic_config(connection), "head")
    engine.dispose()


def test_migration_0005_goes_down_and_up_keeping_runs_and_the_query_role_s_view(database_url: str) -> None:
    from click.testing import CliRunner

    from smallab_db.cli import main

    def without_progress(connection: sa.Connection) -> None:
        assert "progress" not in {column["name"] for column in sa.inspect(connection).get_columns("runs")}
        assert connection.exec_driver_sql("SELECT batch, status FROM run_details").fetchall() == [("kept", "completed")]

    down_and_up(database_url, "0003", without_progress)
    queried = CliRunner().invoke(
        main, ["query", "--json", database_url, "SELECT batch, status, progress, output FROM run_details"]
    )
    assert queried.exit_code == 0, queried.output
    assert json.loads(queried.output) == [{"batch": "kept", "status": "completed", "progress": None, "output": None}]


def test_migration_0007_gives_each_batch_there_is_a_row_of_registrations(database_url: str) -> None:
    def without_registrations(connection: sa.Connection) -> None:
        assert "registrations" not in sa.inspect(connection).get_table_names()

    down_and_up(database_url, "0006", without_registrations)
    with ExperimentRunner(database_url) as runner:
        with runner.engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT listed_digest, registering_token FROM registrations").fetchall()
        assert rows == [(None, None)]
        again = runner.run("kept", [{"seed": 2}, {"seed": 3}], Square(), show_progress=False)
    assert again.skipped == 1 and again.completed == [{"seed": 3}]


def claim_indexes(connection: sa.Connection) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(connection).get_indexes("runs") if "claim" in str(index["name"])}


def test_migration_0008_indexes_only_the_running_claims_and_goes_down_and_up(database_url: str) -> None:
    def with_the_index_of_every_run(connection: sa.Connection) -> None:
        assert claim_indexes(connection) == {"ix_runs_claim_token_status"}

    down_and_up(database_url, "0007", with_the_index_of_every_run)
    with ExperimentRunner(database_url) as runner:
        with runner.engine.connect() as connection:
            assert claim_indexes(connection) == {"ix_runs_running_claim_token"}
            definition = (
                "SELECT sql FROM sqlite_master WHERE name = 'ix_runs_running_claim_token'"
                if connection.dialect.name == "sqlite"
                else "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_runs_running_claim_token'"
            )
            assert "WHERE" in connection.exec_driver_sql(definition).scalar_one()  # pending and finished runs left out
        again = runner.run("kept", [{"seed": 2}, {"seed": 3}], Square(), show_progress=False)
    assert again.skipped == 1 and again.completed == [{"seed": 3}]
