"""``smallab-db query`` cannot write, run programs or read outside the database.

Attacks run in-process through click's ``CliRunner`` (a failure must be a clean exit, not a crash).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result
from workloads import Square

from smallab_db import ExperimentRunner
from smallab_db.cli import main


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
