"""Migrations racing on a brand-new database: all succeed, and one schema results."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import processes
import sqlalchemy as sa

from smallab_db.database import resolve_url
from smallab_db.migration import HEAD_REVISION
from smallab_db.schema import VERSION_TABLE

SMALLAB_DB = str(Path(sys.executable).parent / "smallab-db")
OPEN_A_RUNNER = (
    "import sys; from smallab_db import ExperimentRunner; "
    "ExperimentRunner(sys.argv[1]).run('b' + sys.argv[2], [{'seed': 1}], lambda s: {}, show_progress=False)"
)


def race(commands: list[list[str]], cwd: Path) -> None:
    """Start every command at once and require each to succeed."""
    started = [processes.spawn(command, cwd=cwd, stderr=subprocess.PIPE, text=True) for command in commands]
    for process in started:
        _, error = process.communicate(timeout=120)
        assert process.returncode == 0, error
        assert "Traceback" not in error


def test_four_migrates_and_four_runners_on_a_new_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    race(
        [[SMALLAB_DB, "migrate", path] for _ in range(4)]
        + [[sys.executable, "-c", OPEN_A_RUNNER, path, str(index)] for index in range(4)],
        tmp_path,
    )
    with sqlite3.connect(path) as connection:
        assert connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD_REVISION,)]
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("SELECT count(*) FROM batches").fetchone()[0] == 4
        views = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'view'").fetchone()[0]
    assert views == 1


def test_four_migrates_and_four_runners_on_a_new_postgresql_database(postgres_url: str, tmp_path: Path) -> None:
    race(
        [[SMALLAB_DB, "migrate", postgres_url] for _ in range(4)]
        + [[sys.executable, "-c", OPEN_A_RUNNER, postgres_url, str(index)] for index in range(4)],
        tmp_path,
    )
    engine = sa.create_engine(resolve_url(postgres_url))
    with engine.connect() as connection:
        versions = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars().all()
        batches = connection.exec_driver_sql("SELECT count(*) FROM batches").scalar_one()
    engine.dispose()
    assert versions == [HEAD_REVISION]
    assert batches == 4
