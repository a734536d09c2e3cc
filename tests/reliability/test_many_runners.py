"""Many runner processes on one SQLite file: every specification executes exactly once, the work is spread, and
no "database is locked" error reaches anyone."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from runner_processes import start_runner, statuses, wait_started_line
from workloads import executions

from smallab_db.database import resolve_url
from smallab_db.schema import runs


def race(database: str, batches: list[str], count: int, markers: Path, tmp_path: Path) -> list[tuple[str, str]]:
    """Start one runner per entry of ``batches`` at the same moment; return their (stdout, stderr)."""
    go = tmp_path / "go"
    runners = [
        start_runner(database, batch, count, markers, "--sleep", "0.05", "--wait-for", str(go), wait_started=False)
        for batch in batches
    ]
    for runner in runners:
        wait_started_line(runner)
    go.touch()
    outputs = [runner.communicate(timeout=300) for runner in runners]
    for runner, (_, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err
        assert "locked" not in err.lower(), err
    return [(out, err) for out, err in outputs]


def completed_counts(outputs: list[tuple[str, str]]) -> list[int]:
    """How many runs each runner completed, from its last line ``completed=N failed=N skipped=N``."""
    return [int(out.split("completed=")[1].split()[0]) for out, _ in outputs]


@pytest.mark.parametrize("runners", [4, 8])
def test_runners_sharing_a_batch_execute_each_specification_once(tmp_path: Path, runners: int) -> None:
    database, markers, count = str(tmp_path / "shared.db"), tmp_path / "markers", 30 * runners
    outputs = race(database, ["shared"] * runners, count, markers, tmp_path)
    assert executions(markers) == {seed: 1 for seed in range(count)}
    stored = statuses(database)
    assert len(stored) == count
    assert {status for status, _, _ in stored.values()} == {"completed"}
    assert {attempts for _, attempts, _ in stored.values()} == {1}
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    done = completed_counts(outputs)
    assert sum(done) == count
    assert min(done) > 0, f"some runner got no work: {done}"


def test_two_batches_run_at_once_on_one_file(tmp_path: Path) -> None:
    database, markers, count = str(tmp_path / "two.db"), tmp_path / "markers", 60
    outputs = race(database, ["left", "right", "left", "right"], count, markers, tmp_path)
    assert executions(markers) == {seed: 2 for seed in range(count)}  # once per batch
    done = completed_counts(outputs)
    assert done[0] + done[2] == count and done[1] + done[3] == count
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT batch, status, count(*) FROM run_details GROUP BY batch, status ORDER BY batch"
        ).fetchall()
    assert rows == [("left", "completed", count), ("right", "completed", count)]


def test_four_runners_share_a_batch_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    markers, count = tmp_path / "markers", 120
    outputs = race(postgres_url, ["shared"] * 4, count, markers, tmp_path)
    assert executions(markers) == {seed: 1 for seed in range(count)}
    engine = sa.create_engine(resolve_url(postgres_url))
    with engine.connect() as connection:
        rows = connection.execute(sa.select(runs.c.status, runs.c.attempts, runs.c.result)).all()
    engine.dispose()
    assert len(rows) == count
    assert {(status, attempts) for status, attempts, _ in rows} == {("completed", 1)}
    assert sorted(pickle.loads(result)["seed"] for _, _, result in rows) == list(range(count))
    done = completed_counts(outputs)
    assert sum(done) == count and min(done) > 0, done
