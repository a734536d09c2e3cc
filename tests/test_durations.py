"""``run_details.duration_s`` is precise to the microsecond on SQLite (migration 0004) as on PostgreSQL, so the docs'
"slowest runs" query orders runs under a millisecond instead of showing ties at 0.0."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import update

from smallab_db import ExperimentRunner
from smallab_db.alembic_migrations import alembic_config
from smallab_db.database import create_engine, resolve_url
from smallab_db.schema import runs

START = datetime(2026, 11, 28, 23, 59, 59, 999_990, tzinfo=UTC)  # a day, a second and a millisecond end soon after
# Durations of the runs, each in microseconds: under a millisecond, across second and day boundaries, long.
MICROSECONDS = [1, 19, 250, 999, 1_000, 1_001, 10, 1_000_001, 86_400_000_001]


def durations(url: str, batch: str) -> dict[int, Any]:
    """``{run_id: duration_s}`` of the batch, from the view."""
    engine = sqlalchemy.create_engine(resolve_url(url))
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                f"SELECT run_id, duration_s FROM run_details WHERE batch = '{batch}' ORDER BY run_id"
            )
            return {run_id: seconds for run_id, seconds in rows}
    finally:
        engine.dispose()


def set_times(url: str, times: dict[int, tuple[datetime, datetime]]) -> None:
    """Store ``started_at`` and ``finished_at`` of runs as SQLAlchemy stores them (SQLite: text with microseconds)."""
    engine = create_engine(resolve_url(url))
    try:
        with engine.begin() as connection:
            for run_id, (started, finished) in times.items():
                connection.execute(
                    update(runs).where(runs.c.id == run_id).values(started_at=started, finished_at=finished)
                )
    finally:
        engine.dispose()


def test_durations_are_exact_to_the_microsecond(database_url: str) -> None:
    """Runs lasting 1 µs to a day and 1 µs, starting 10 µs before midnight: each ``duration_s`` is its duration,
    exact to the microsecond, on both databases."""
    with ExperimentRunner(database_url) as runner:
        runner.run("timed", [{"seed": seed} for seed in range(len(MICROSECONDS))], dict, show_progress=False)
    ids = sorted(durations(database_url, "timed"))
    set_times(
        database_url,
        {run_id: (START, START + timedelta(microseconds=us)) for run_id, us in zip(ids, MICROSECONDS, strict=True)},
    )

    shown = durations(database_url, "timed")

    for run_id, us in zip(ids, MICROSECONDS, strict=True):
        assert float(shown[run_id]) == pytest.approx(us / 1_000_000, abs=1e-7), (us, shown[run_id])


def busy(specification: dict[str, Any]) -> dict[str, Any]:
    """Works (no sleep, whose resolution is coarser) for ``10 * seed`` microseconds: 10 µs to 200 µs."""
    end = time.perf_counter() + specification["seed"] * 10e-6
    while time.perf_counter() < end:
        pass
    return {}


def test_real_runs_under_a_millisecond_show_their_own_durations(database_url: str) -> None:
    """Runs of 10 µs to 200 µs: each duration is above zero and equal to what its stored timestamps give, to the
    microsecond, and they differ (julianday() showed 0.0 for each of them)."""
    with ExperimentRunner(database_url) as runner:
        runner.run("quick", [{"seed": seed} for seed in range(1, 21)], busy, show_progress=False)
    engine = sqlalchemy.create_engine(resolve_url(database_url))
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                sqlalchemy.select(runs.c.id, runs.c.started_at, runs.c.finished_at).order_by(runs.c.id)
            ).all()
    finally:
        engine.dispose()
    shown = durations(database_url, "quick")

    for run_id, started, finished in stored:
        exact = (finished - started).total_seconds()
        assert exact >= 10e-6
        assert float(shown[run_id]) == pytest.approx(exact, abs=1e-7)
    assert len({float(seconds) for seconds in shown.values()}) >= 10


def test_migration_0004_upgrades_an_older_sqlite_view_and_downgrades_to_it(sqlite_path: str) -> None:
    """A database at 0003 (julianday(): 0.0 for a run of 19 µs) shows 0.000019 once opened, which upgrades it; a
    downgrade to 0003 gives the old view back."""
    engine = create_engine(resolve_url(sqlite_path))
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
    engine.dispose()
    with ExperimentRunner(sqlite_path) as runner:  # opening upgrades to 0004
        runner.run("old", [{"seed": 1}], dict, show_progress=False)
    set_times(sqlite_path, {1: (START, START + timedelta(microseconds=19))})
    assert durations(sqlite_path, "old") == {1: pytest.approx(0.000019, abs=1e-9)}

    engine = create_engine(resolve_url(sqlite_path))
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    engine.dispose()
    assert durations(sqlite_path, "old") == {1: 0.0}
