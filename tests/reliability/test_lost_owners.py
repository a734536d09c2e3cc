"""Claims whose owner is gone: a dead process on this host, and another host whose lease expired."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import sys
import time
from pathlib import Path

import processes
from runner_processes import start_runner, statuses, wait_for_completed
from workloads import Square, executions

from smallab_db import ExperimentRunner
from smallab_db.records import Fate, Outcome, Owner, utc_now
from smallab_db.specification import hashed


def claim_as(runner: ExperimentRunner, batch: str, owner: Owner, count: int) -> list[int]:
    """Register seeds 0…count-1 in ``batch`` and claim them all for ``owner``, as its runner would have."""
    batch_id = runner.store.ensure_batch(batch)
    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(count)])), rerun_all=False)
    return [run_id for run_id, _ in runner.store.claim(batch_id, owner, count)]


def test_another_host_s_claims_are_reclaimed_after_the_lease_and_its_late_result_refused(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    foreign = Owner(lease_seconds=0.5, host="another-host.example", pid=1)
    claimed = claim_as(runner, "foreign", foreign, 4)
    assert len(claimed) == 4

    time.sleep(0.6)  # the foreign lease expires
    summary = runner.run("foreign", [{"seed": seed} for seed in range(4)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2, 3]

    now = utc_now()
    late = Outcome(run_id=claimed[0], started_at=now, finished_at=now, result_pickle=pickle.dumps({"square": -1}))
    assert runner.store.record(foreign, [late]) == {claimed[0]: Fate.CLAIM_LOST}
    assert runner.results("foreign")[0] == {"specification": {"seed": 0}, "result": {"square": 0}}


def test_a_live_claim_of_another_host_is_left_alone(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    claim_as(runner, "busy", Owner(lease_seconds=600, host="another-host.example", pid=1), 3)
    summary = runner.run("busy", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert summary.completed == []
    assert {status for status, _, _ in statuses(sqlite_path).values()} == {"running"}


def test_a_dead_process_on_this_host_is_reclaimed_at_once(sqlite_path: str) -> None:
    dead = processes.spawn([sys.executable, "-c", "pass"])
    dead.wait()
    runner = ExperimentRunner(sqlite_path)
    claim_as(runner, "orphans", Owner(lease_seconds=600, pid=dead.pid), 3)
    assert {status for status, _, _ in statuses(sqlite_path).values()} == {"running"}
    summary = runner.run("orphans", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2]
    assert [attempts for _, attempts, _ in statuses(sqlite_path).values()] == [2, 2, 2]


def freeze_outside_a_write(pid: int, database: str) -> None:
    """Stop ``pid`` (SIGSTOP) at a moment it holds no SQLite write lock: frozen inside a write transaction, it would
    make every other writer wait for SQLite's busy timeout, which no lease can shorten on one file."""
    for _ in range(1000):
        os.kill(pid, signal.SIGSTOP)
        try:
            with sqlite3.connect(database, timeout=0, isolation_level=None) as probe:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # it holds the lock: let it finish its write and try again
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
    raise AssertionError("the runner held the write lock at every one of 1000 tries")


def test_a_runner_stalled_past_its_lease_starts_none_of_the_runs_taken_over(tmp_path: Path) -> None:
    """A runner frozen (SIGSTOP, as a suspended laptop) past its lease: another runner reclaims and finishes its
    runs; once thawed, it starts none of its lost claims, and its late result of the run in flight is refused."""
    database, markers, count = str(tmp_path / "stall.db"), tmp_path / "markers", 40
    stalled = start_runner(database, "stall", count, markers, "--sleep", "0.05", "--lease", "1")
    wait_for_completed(database, 3, stalled)
    freeze_outside_a_write(stalled.pid, database)
    try:
        time.sleep(1.5)  # the lease lapses
        rescuer = start_runner(database, "stall", count, markers, "--lease", "1")
        out, err = rescuer.communicate(timeout=120)
        assert rescuer.returncode == 0, err
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    out, err = stalled.communicate(timeout=60)
    assert stalled.returncode == 0, err
    counts = executions(markers)
    assert set(counts) == set(range(count))
    twice = [seed for seed, executed in counts.items() if executed > 1]
    # At most the run in flight when it froze, and one that had finished within the 0.2 s before it, unstored.
    assert len(twice) <= 2 and max(counts.values()) <= 2, counts
    assert f"not_stored={len(twice)}" in out
    assert {status for status, _, _ in statuses(database).values()} == {"completed"}
