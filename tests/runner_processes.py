"""Starting ``workloads.py`` runners as real processes, and reading what they left in their database: a SQLite file
or a PostgreSQL URL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from processes import spawn
from sqlalchemy.pool import NullPool

from smallab_db.database import resolve_url
from smallab_db.liveness import SIMULATED_HOST_ENV
from smallab_db.schema import runs

WORKLOAD = Path(__file__).resolve().parent / "workloads.py"


def start_runner(
    database: str,
    batch: str,
    count: int,
    markers: Path,
    *options: str,
    wait_started: bool = True,
    host: str | None = None,
) -> subprocess.Popen[str]:
    """Start ``workloads.py`` in its own process group; by default wait until it has opened the database.

    Args:
        host: a simulated machine name (``$SMALLAB_DB_SIMULATED_HOST``): runners given different names treat each
            other as different machines, whose claims only the lease ends. None: this machine.
    """
    markers.mkdir(exist_ok=True)
    environment = dict(os.environ)
    if host is not None:
        environment[SIMULATED_HOST_ENV] = host
    process: subprocess.Popen[str] = spawn(
        [sys.executable, str(WORKLOAD), database, batch, str(count), "--markers", str(markers), *options],
        cwd=markers.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    if wait_started:
        wait_started_line(process)
    return process


def wait_started_line(process: subprocess.Popen[str]) -> None:
    """Wait for the line ``started`` that the runner prints once it has opened the database."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line == "started", process.stderr.read() if process.stderr else line


def is_sqlite(database: str) -> bool:
    """Tell a SQLite file path from a database URL."""
    return "://" not in database


def statuses(database: str) -> dict[int, tuple[str, int, bytes | None]]:
    """Map each seed to its run's (status, attempts, result pickle)."""
    if is_sqlite(database):
        with sqlite3.connect(database) as connection:
            query = "SELECT json_extract(specification, '$.seed'), status, attempts, result FROM runs"
            return {seed: (status, attempts, result) for seed, status, attempts, result in connection.execute(query)}
    query = sa.select(runs.c.specification, runs.c.status, runs.c.attempts, runs.c.result)
    return {spec["seed"]: (status, attempts, result) for spec, status, attempts, result in rows(database, query)}


def aware(moment: datetime) -> datetime:
    """A timestamp read back with its zone: PostgreSQL gives one, SQLite's text is UTC without it."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def rows(database: str, query: Any) -> list[Any]:
    """The rows of a SQLAlchemy query on a database URL, through a connection closed at once."""
    engine = sa.create_engine(resolve_url(database), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(query))
    finally:
        engine.dispose()


def wait_for_sessions_to_end(database: str) -> None:
    """On PostgreSQL, wait (at most 30 s) until no session but this one is connected to the database: the server
    ends a killed client's session only once it has finished what that client sent, a COMMIT included, so what the
    killed processes wrote is all visible after. A SQLite file has no server: a killed process wrote what it wrote."""
    if is_sqlite(database):
        return
    others = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 30
    while rows(database, others)[0][0]:
        assert time.monotonic() < deadline, "the killed processes' sessions did not end within 30 s"
        time.sleep(0.05)


def wait_for_completed(database: str, at_least: int, process: subprocess.Popen[str]) -> None:
    """Poll the database until ``at_least`` runs are completed (at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the runner ended before the test could interrupt it"
        try:
            done = sum(status == "completed" for status, _, _ in statuses(database).values())
        except (sqlite3.OperationalError, sa.exc.ProgrammingError):  # the tables do not exist yet
            done = 0
        if done >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} runs completed within 60 s")


def race(database: str, batches: list[str], count: int, markers: Path, *options: str) -> list[tuple[str, str]]:
    """Start one runner per entry of ``batches`` (with ``--sleep 0.05`` and ``options``), release them at the same
    moment, and require each to succeed with no "database is locked" error; return their (stdout, stderr)."""
    go = markers.parent / "go"
    runners = [
        start_runner(
            database, batch, count, markers, "--sleep", "0.05", *options, "--wait-for", str(go), wait_started=False
        )
        for batch in batches
    ]
    for runner in runners:
        wait_started_line(runner)
    go.touch()
    outputs = [runner.communicate(timeout=300) for runner in runners]
    for runner, (_, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err
        assert "locked" not in err.lower()
    return [(out, err) for out, err in outputs]


def completed_counts(outputs: list[tuple[str, str]]) -> list[int]:
    """How many runs each runner completed, from its last line ``completed=N failed=N skipped=N``."""
    return [int(out.split("completed=")[1].split()[0]) for out, _ in outputs]
