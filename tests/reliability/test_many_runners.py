"""Many runner processes on one SQLite file or PostgreSQL database: every specification executes exactly once, the
work is spread, and no "database is locked" or connection error reaches anyone."""

from __future__ import annotations

import pickle
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType

import psycopg
import pytest
import sqlalchemy as sa
from private_postgres import PrivateServer
from runner_processes import completed_counts, race, rows, statuses
from workloads import executions

from smallab_db.schema import runs

RESULTS = sa.select(runs.c.status, runs.c.attempts, runs.c.result)


@pytest.mark.parametrize("runners", [4, 8])
def test_runners_sharing_a_batch_execute_each_specification_once(tmp_path: Path, runners: int) -> None:
    database, markers, count = str(tmp_path / "shared.db"), tmp_path / "markers", 30 * runners
    outputs = race(database, ["shared"] * runners, count, markers)
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
    outputs = race(database, ["left", "right", "left", "right"], count, markers)
    assert executions(markers) == {seed: 2 for seed in range(count)}  # once per batch
    done = completed_counts(outputs)
    assert done[0] + done[2] == count and done[1] + done[3] == count
    with sqlite3.connect(database) as connection:
        counts = connection.execute(
            "SELECT batch, status, count(*) FROM run_details GROUP BY batch, status ORDER BY batch"
        ).fetchall()
    assert counts == [("left", "completed", count), ("right", "completed", count)]


def test_four_runners_share_a_batch_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    markers, count = tmp_path / "markers", 120
    outputs = race(postgres_url, ["shared"] * 4, count, markers)
    assert executions(markers) == {seed: 1 for seed in range(count)}
    stored = rows(postgres_url, RESULTS)
    assert len(stored) == count
    assert {(status, attempts) for status, attempts, _ in stored} == {("completed", 1)}
    assert sorted(pickle.loads(result)["seed"] for _, _, result in stored) == list(range(count))
    done = completed_counts(outputs)
    assert sum(done) == count and min(done) > 0, done


class ConnectionSampler:
    """Samples ``pg_stat_activity`` in a thread: the peak number of connections each smallab-db process held to one
    database (processes are told apart by the ``application_name`` smallab-db gives their connections)."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.peaks: Counter[str] = Counter()
        self.samples = 0
        self._admin_url = admin_url.replace("+psycopg", "")
        self._database = database
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stopped.set()
        self._thread.join()

    def _sample(self) -> None:
        query = (
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name LIKE 'smallab-db pid %%' GROUP BY application_name"
        )
        with psycopg.connect(self._admin_url, autocommit=True) as connection:
            while not self._stopped.wait(0.02):
                for name, count in connection.execute(query, [self._database]):
                    self.peaks[name] = max(self.peaks[name], count)
                self.samples += 1


def test_32_runners_share_a_batch_on_postgresql_with_at_most_2_connections_each(
    own_postgres_server: PrivateServer, tmp_path: Path
) -> None:
    """On a server of the test's own (64 connections would crowd the shared server's 100 under other tests)."""
    database, markers, count = own_postgres_server.create_database("many"), tmp_path / "markers", 320
    with ConnectionSampler(own_postgres_server.url(), "many") as sampler:
        outputs = race(database, ["shared"] * 32, count, markers)
    assert executions(markers) == {seed: 1 for seed in range(count)}
    stored = rows(database, RESULTS)
    assert len(stored) == count and {(status, attempts) for status, attempts, _ in stored} == {("completed", 1)}
    for _, err in outputs:
        assert "trying again" not in err and "too many clients" not in err.lower() and "Error" not in err, err
    done = completed_counts(outputs)
    assert sum(done) == count and sum(runs > 0 for runs in done) >= 16, done
    assert len(sampler.peaks) == 32, f"pg_stat_activity showed {len(sampler.peaks)} of the 32 runners"
    assert max(sampler.peaks.values()) <= 2, sampler.peaks
