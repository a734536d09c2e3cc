"""A runner SIGKILLed (with its workers) at random moments loses nothing, and a plain re-run finishes the batch; on a
SQLite file and on PostgreSQL."""

from __future__ import annotations

import pickle
import random
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from processes import kill_group
from runner_processes import aware, is_sqlite, rows, start_runner, statuses, wait_for_sessions_to_end
from workloads import executions, finish_times

from smallab_db.schema import runs

COUNT = 60
# 24 kill points, drawn once from a fixed seed so that a failure can be replayed: (parallelism, seconds after start)
KILL_POINTS = [
    (parallel, round(random.Random(1000 * parallel + index).uniform(0.0, 2.2), 3))
    for parallel in (1, 2)
    for index in range(12)
]


@pytest.mark.parametrize(("parallel", "kill_after"), KILL_POINTS)
def test_a_sigkilled_runner_loses_nothing_and_a_rerun_finishes(
    database_url: str, tmp_path: Path, parallel: int, kill_after: float
) -> None:
    database, markers = database_url, tmp_path / "markers"
    options = ("--sleep", "0.08", "--parallel", str(parallel), "--lease", "600")
    runner = start_runner(database, "crash", COUNT, markers, *options)
    time.sleep(kill_after)
    assert runner.poll() is None, "the batch ended before the kill point: make it longer"
    kill_group(runner)
    killed_at = time.time()
    runner.wait(timeout=30)
    time.sleep(0.2)  # let the killed workers disappear
    wait_for_sessions_to_end(database)

    if is_sqlite(database):  # PostgreSQL's own write-ahead log makes a killed client harmless
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = statuses(database)  # the runner built the tables before it printed "started"
    for seed, finished in finish_times(markers):
        if finished < killed_at - 1:
            status, _, result = stored[seed]
            assert status == "completed", f"seed {seed} returned {killed_at - finished:.2f} s before the kill"
            assert pickle.loads(result)["seed"] == seed
    for seed, (status, _, result) in stored.items():
        if status == "completed":
            assert pickle.loads(result)["seed"] == seed
    completed_before = {seed for seed, (status, _, _) in stored.items() if status == "completed"}
    assert len(completed_before) < COUNT, "the kill came after the last run: the test proved nothing"

    rerun = start_runner(database, "crash", COUNT, markers, *options)  # a 600 s lease: it must not wait for it
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"skipped={len(completed_before)}" in out
    stored = statuses(database)
    assert {status for status, _, _ in stored.values()} == {"completed"}
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    counts = executions(markers)
    assert all(counts[seed] == 1 for seed in completed_before), "a completed run was executed again"
    assert set(counts) == set(range(COUNT))


def test_the_kill_points_are_many_and_cover_both_modes() -> None:
    assert len(KILL_POINTS) >= 20
    assert {parallel for parallel, _ in KILL_POINTS} == {1, 2}


@pytest.mark.parametrize("parallel", [1, 2])
def test_results_are_stored_within_a_second_while_the_batch_still_runs(
    database_url: str, tmp_path: Path, parallel: int
) -> None:
    """Serially, and with workers that get runs in chunks sized by their pace."""
    database, markers = database_url, tmp_path / "markers"
    runner = start_runner(database, "live", 2 * parallel + 1, markers, "--sleep", "3", "--parallel", str(parallel))
    try:
        deadline = time.monotonic() + 30
        while not finish_times(markers) and time.monotonic() < deadline:
            time.sleep(0.02)
        (seed, finished), *_ = finish_times(markers)
        time.sleep(max(0.0, finished + 1 - time.time()))
        assert statuses(database)[seed][0] == "completed"  # while the next 3 s run is still going
        assert runner.poll() is None
    finally:
        kill_group(runner)
        runner.wait()


def test_a_runner_keeps_renewing_its_lease_while_a_long_run_goes_on(database_url: str, tmp_path: Path) -> None:
    """Renewals every 2 s of a 6 s lease: a renewal would have to be 4 s late for the lease to lapse, far beyond a
    busy machine's delays (``tests/test_store.py`` checks renewal step by step, without timing)."""
    database, markers = database_url, tmp_path / "markers"
    runner = start_runner(database, "lease", 1, markers, "--sleep", "7.5", "--lease", "6")
    try:
        leases = set()
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            row = next(iter(rows(database, sa.select(runs.c.status, runs.c.lease_expires_at))), None)
            if row is not None and row.status == "running":
                lease = aware(row.lease_expires_at)
                assert lease > datetime.now(UTC), "the lease lapsed while the run went on"
                leases.add(lease)
            time.sleep(0.05)
        assert len(leases) >= 3  # the claim's lease, then renewals at 2, 4 and 6 s
        assert runner.wait(timeout=60) == 0
    finally:
        kill_group(runner)
