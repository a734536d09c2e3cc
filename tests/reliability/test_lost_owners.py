"""Claims whose owner is gone: a dead process on this host, and another host whose lease expired; on a SQLite file and
on PostgreSQL. Other machines are runner processes given host identities of their own
(``$SMALLAB_DB_SIMULATED_HOST``), so only the lease can end their claims."""

from __future__ import annotations

import fcntl
import math
import os
import pickle
import signal
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import processes
import psycopg
import pytest
import sqlalchemy as sa
from runner_processes import aware, is_sqlite, rows, start_runner, statuses, wait_for_completed
from workloads import Square, executions

from smallab_db import ExperimentRunner
from smallab_db.recorder import FLUSH_INTERVAL_SECONDS
from smallab_db.records import Fate, Outcome, Owner, utc_now
from smallab_db.schema import runs
from smallab_db.specification import hashed
from smallab_db.write_turns import LOCK_SUFFIX


def claim_as(runner: ExperimentRunner, batch: str, owner: Owner, count: int) -> list[int]:
    """Register seeds 0…count-1 in ``batch`` and claim them all for ``owner``, as its runner would have."""
    batch_id = runner.store.ensure_batch(batch)
    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(count)])), rerun_all=False)
    return [run_id for run_id, _ in runner.store.claim(batch_id, owner, count)]


def test_another_host_s_claims_are_reclaimed_after_the_lease_and_its_late_result_refused(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    foreign = Owner(lease_seconds=0.5, host="another-host.example", pid=1)
    claimed = claim_as(runner, "foreign", foreign, 4)
    assert len(claimed) == 4

    time.sleep(0.6)  # the foreign lease expires
    summary = runner.run("foreign", [{"seed": seed} for seed in range(4)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2, 3]

    now = utc_now()
    late = Outcome(run_id=claimed[0], started_at=now, finished_at=now, result_pickle=pickle.dumps({"square": -1}))
    assert runner.store.record(foreign.token, [late]) == {claimed[0]: Fate.CLAIM_LOST}
    assert runner.results("foreign")[0] == {"specification": {"seed": 0}, "result": {"square": 0}}


def test_a_live_claim_of_another_host_is_left_alone(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    claim_as(runner, "busy", Owner(lease_seconds=600, host="another-host.example", pid=1), 3)
    summary = runner.run("busy", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert summary.completed == []
    assert {status for status, _, _ in statuses(database_url).values()} == {"running"}


def test_a_dead_process_on_this_host_is_reclaimed_at_once(database_url: str) -> None:
    dead = processes.spawn([sys.executable, "-c", "pass"])
    dead.wait()
    runner = ExperimentRunner(database_url)
    claim_as(runner, "orphans", Owner(lease_seconds=600, pid=dead.pid), 3)
    assert {status for status, _, _ in statuses(database_url).values()} == {"running"}
    summary = runner.run("orphans", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2]
    assert [attempts for _, attempts, _ in statuses(database_url).values()] == [2, 2, 2]


def test_a_transaction_left_open_on_an_abandoned_run_does_not_block_the_others(postgres_url: str) -> None:
    """A machine that died in the middle of writing a run keeps that row locked until the server drops its
    connection (TCP keepalive: hours, by default); reclaiming skips the row instead of waiting for it."""
    runner = ExperimentRunner(postgres_url)
    claimed = claim_as(runner, "stuck", Owner(lease_seconds=0.1, host="dead.example", pid=1, node="dead"), 4)
    time.sleep(0.2)  # the lease expires
    with psycopg.connect(postgres_url.replace("+psycopg", "")) as dead_machine:
        dead_machine.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", [claimed[0]])  # and never commits
        reclaimed: list[int] = []
        batch_id = runner.store.ensure_batch("stuck")
        reclaiming = threading.Thread(
            target=lambda: reclaimed.append(runner.store.reclaim_abandoned(batch_id, Owner(lease_seconds=60))),
            daemon=True,
        )
        reclaiming.start()
        reclaiming.join(timeout=60)
        assert reclaimed == [3], "reclaiming waited for the row lock of a dead machine's transaction"
        dead_machine.rollback()
    assert runner.store.reclaim_abandoned(batch_id, Owner(lease_seconds=60)) == 1


def test_a_dead_machine_s_runs_wait_for_its_lease_then_another_machine_runs_them(
    database_url: str, tmp_path: Path
) -> None:
    """Machine A dies (SIGKILL) mid-batch. Machine B, a process of another host identity, cannot tell A is dead: it
    runs every pending run and leaves A's claims alone while A's 8 s lease lasts (a runner of A's own node would
    take them at once). Once the lease has expired, machine C takes them over and completes the batch, executing
    only A's unfinished runs again."""
    database, markers, count = database_url, tmp_path / "markers", 40
    machine_a = start_runner(database, "machines", count, markers, "--sleep", "0.1", "--lease", "8", host="a")
    wait_for_completed(database, 3, machine_a)
    processes.kill_group(machine_a)
    machine_a.wait()
    running = runs.c.status == "running"
    columns = (runs.c.id, runs.c.specification, runs.c.host, runs.c.lease_expires_at)
    held = rows(database, sa.select(*columns).where(running))
    assert held and {row.host for row in held} == {"a"}
    lease_end = max(aware(row.lease_expires_at) for row in held)

    machine_b = start_runner(database, "machines", count, markers, "--lease", "8", host="b")
    out, err = machine_b.communicate(timeout=120)
    assert machine_b.returncode == 0, err
    assert datetime.now(UTC) < lease_end, "machine B took longer than A's lease: the test proved nothing"
    still_held = rows(database, sa.select(runs.c.id, runs.c.host).where(runs.c.status == "running"))
    assert {(row.id, row.host) for row in still_held} == {(row.id, "a") for row in held}

    time.sleep(max(0.0, (lease_end - datetime.now(UTC)).total_seconds()) + 0.5)
    machine_c = start_runner(database, "machines", count, markers, "--lease", "8", host="c")
    out, err = machine_c.communicate(timeout=120)
    assert machine_c.returncode == 0, err
    assert f"completed={len(held)} " in out
    taken_over = rows(
        database, sa.select(runs.c.started_at, runs.c.host).where(runs.c.id.in_([row.id for row in held]))
    )
    assert all(row.host == "c" and aware(row.started_at) >= lease_end for row in taken_over)
    stored = statuses(database)
    assert {status for status, _, _ in stored.values()} == {"completed"}
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    counts = executions(markers)
    assert set(counts) == set(range(count))
    # Executed again: only runs A held, that it had started (and maybe finished within its last 0.1 s, unstored).
    again = {seed for seed, executed in counts.items() if executed > 1}
    assert again <= {row.specification["seed"] for row in held} and max(counts.values()) <= 2, counts


RUN_SECONDS = 0.05


def freeze_outside_a_write(pid: int, database: str) -> None:
    """Stop ``pid`` (SIGSTOP) at a moment it is in no write transaction and, on SQLite, does not hold the write turn.
    Frozen inside one on SQLite, it would make every other writer wait until it goes on, which no lease can shorten
    on one file; on PostgreSQL, it would keep the rows it writes locked (reclaiming skips those: see the test
    above)."""
    for _ in range(1000):
        os.kill(pid, signal.SIGSTOP)
        if not in_a_transaction(pid, database):
            return
        os.kill(pid, signal.SIGCONT)  # let it finish its write and try again
        time.sleep(0.01)
    raise AssertionError("the runner was writing at every one of 1000 tries")


def in_a_transaction(pid: int, database: str) -> bool:
    """Tell whether the runner process ``pid`` holds the write turn or SQLite's write lock, or a PostgreSQL connection
    of it (named by its pid in ``application_name``) is in a transaction."""
    if is_sqlite(database):
        try:
            with open(database + LOCK_SUFFIX, "a") as turn:  # the write turn: taken and let go at once if free
                fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        try:
            with sqlite3.connect(database, timeout=0, isolation_level=None) as probe:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return True
        return False
    activity = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name AND state <> 'idle'"
    ).bindparams(name=f"smallab-db pid {pid} on %")
    return rows(database, activity)[0][0] > 0


@pytest.mark.parametrize("machines", [False, True], ids=["one-host", "two-hosts"])
def test_a_runner_stalled_past_its_lease_starts_none_of_the_runs_taken_over(
    database_url: str, tmp_path: Path, machines: bool
) -> None:
    """A runner frozen (SIGSTOP, as a suspended laptop) past its lease: another runner, of this host or another,
    reclaims and finishes its runs; once thawed, it starts none of its lost claims, and its late result of the run
    in flight is refused."""
    database, markers, count = database_url, tmp_path / "markers", 40
    stalled_host, rescuer_host = ("a", "b") if machines else (None, None)
    stalled = start_runner(
        database, "stall", count, markers, "--sleep", str(RUN_SECONDS), "--lease", "1", host=stalled_host
    )
    wait_for_completed(database, 3, stalled)
    freeze_outside_a_write(stalled.pid, database)
    try:
        time.sleep(1.5)  # the lease lapses
        rescuer = start_runner(database, "stall", count, markers, "--lease", "1", host=rescuer_host)
        out, err = rescuer.communicate(timeout=120)
        assert rescuer.returncode == 0, err
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    out, err = stalled.communicate(timeout=60)
    assert stalled.returncode == 0, err
    counts = executions(markers)
    assert set(counts) == set(range(count))
    twice = [seed for seed, executed in counts.items() if executed > 1]
    # At most the run in flight when it froze, and those that had finished within the recorder's last flush interval
    # before it, unstored: none it would have started after thawing.
    assert len(twice) <= 1 + math.ceil(FLUSH_INTERVAL_SECONDS / RUN_SECONDS) and max(counts.values()) <= 2, counts
    assert f"not_stored={len(twice)}" in out
    assert {status for status, _, _ in statuses(database).values()} == {"completed"}
