"""Real processes: runners sharing a batch, a SIGKILLed runner, Ctrl-C, and claims whose owner is gone."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from workloads import Square, executions, finish_times

from smallab_db import ExperimentRunner
from smallab_db.execution import Outcome
from smallab_db.store import Owner, utc_now

WORKLOAD = Path(__file__).resolve().parent / "workloads.py"


def start_runner(database: str, batch: str, count: int, markers: Path, *options: str) -> subprocess.Popen[str]:
    """Start ``workloads.py`` in its own process group, and wait until it has opened the database."""
    markers.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, str(WORKLOAD), database, batch, str(count), "--markers", str(markers), *options],
        cwd=markers.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started", process.stderr.read() if process.stderr else ""
    return process


def statuses(database: str) -> dict[int, tuple[str, int, bytes | None]]:
    """Map each seed to its run's (status, attempts, result pickle)."""
    with sqlite3.connect(database) as connection:
        query = "SELECT json_extract(specification, '$.seed'), status, attempts, result FROM runs"
        return {seed: (status, attempts, result) for seed, status, attempts, result in connection.execute(query)}


def wait_for_completed(database: str, at_least: int, process: subprocess.Popen[str]) -> None:
    """Poll the database until ``at_least`` runs are completed (at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the runner ended before the test could interrupt it"
        if Path(database).exists():
            try:
                done = sum(status == "completed" for status, _, _ in statuses(database).values())
            except sqlite3.OperationalError:
                done = 0
            if done >= at_least:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} runs completed within 60 s")


def test_two_processes_share_a_batch_and_run_each_specification_once(tmp_path: Path) -> None:
    database, markers = str(tmp_path / "shared.db"), tmp_path / "markers"
    runners = [start_runner(database, "shared", 60, markers, "--sleep", "0.05") for _ in range(2)]
    outputs = [runner.communicate(timeout=120) for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], outputs
    assert executions(markers) == {seed: 1 for seed in range(60)}
    stored = statuses(database)
    assert {status for status, _, _ in stored.values()} == {"completed"}
    pids = [pickle.loads(result)["pid"] for _, _, result in stored.values()]
    assert {pid: pids.count(pid) for pid in set(pids)}.keys() == {runner.pid for runner in runners}
    completed_counts = sorted(int(out.split()[0].split("=")[1]) for out, _ in outputs)
    assert sum(completed_counts) == 60 and completed_counts[0] > 0


@pytest.mark.parametrize(
    ("parallel", "kill_after"),
    [(1, 1), (1, 7), (1, 15), (2, 3), (2, 12)],
)
def test_a_sigkilled_runner_loses_nothing_and_a_rerun_finishes(tmp_path: Path, parallel: int, kill_after: int) -> None:
    database, markers = str(tmp_path / "crash.db"), tmp_path / "markers"
    options = ("--sleep", "0.1", "--parallel", str(parallel), "--lease", "600")
    runner = start_runner(database, "crash", 30, markers, *options)
    wait_for_completed(database, kill_after, runner)
    os.killpg(runner.pid, signal.SIGKILL)
    killed_at = time.time()
    runner.wait(timeout=30)
    time.sleep(0.2)  # let killed workers disappear

    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = statuses(database)
    for seed, finished in finish_times(markers):
        if finished < killed_at - 1:
            status, _, result = stored[seed]
            assert status == "completed", f"seed {seed} finished {killed_at - finished:.2f}s before the kill"
            assert pickle.loads(result)["seed"] == seed
    completed_before = {seed for seed, (status, _, _) in stored.items() if status == "completed"}
    assert "running" in {status for status, _, _ in stored.values()}  # the dead runner's claims

    rerun = start_runner(database, "crash", 30, markers, *options)  # a 600 s lease: must not wait for it
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"skipped={len(completed_before)}" in out
    stored = statuses(database)
    assert {status for status, _, _ in stored.values()} == {"completed"}
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    counts = executions(markers)
    assert all(counts[seed] == 1 for seed in completed_before), "a completed run was executed again"
    assert set(counts) == set(range(30))


@pytest.mark.parametrize("parallel", [1, 2])
def test_ctrl_c_keeps_results_and_returns_claims_to_pending(tmp_path: Path, parallel: int) -> None:
    database, markers = str(tmp_path / "interrupted.db"), tmp_path / "markers"
    runner = start_runner(database, "interrupted", 40, markers, "--sleep", "0.1", "--parallel", str(parallel))
    wait_for_completed(database, 4, runner)
    os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = runner.communicate(timeout=30)
    assert runner.returncode != 0
    assert "interrupted" in err and "unfinished runs are pending again" in err
    stored = statuses(database)
    assert "running" not in {status for status, _, _ in stored.values()}
    assert {"completed", "pending"} <= {status for status, _, _ in stored.values()}
    assert all(pickle.loads(result)["seed"] == seed for seed, (s, _, result) in stored.items() if s == "completed")
    started = executions(markers)
    for seed, (status, attempts, _) in stored.items():
        if status == "pending":  # an execution that started counts; a claim never handed out does not
            if parallel == 1:
                assert attempts == started.get(seed, 0)
            else:  # joblib may have queued a task that no worker started yet
                assert started.get(seed, 0) <= attempts <= 1

    rerun = start_runner(database, "interrupted", 40, markers, "--parallel", str(parallel))
    assert rerun.wait(timeout=120) == 0
    assert {status for status, _, _ in statuses(database).values()} == {"completed"}


def claim_as(runner: ExperimentRunner, batch: str, owner: Owner, count: int) -> list[int]:
    """Register seeds 0…count-1 in ``batch`` and claim them all for ``owner``."""
    runner.run(batch, [], Square(), show_progress=False)
    batch_id = runner.store.ensure_batch(batch)
    from smallab_db.specification import hashed

    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(count)])), rerun_all=False)
    return [run_id for run_id, _ in runner.store.claim(batch_id, owner, count)]


def test_a_foreign_host_s_claims_are_reclaimed_after_their_lease_and_its_late_result_refused(
    sqlite_path: str,
) -> None:
    runner = ExperimentRunner(sqlite_path)
    foreign = Owner(lease_seconds=0.5, host="another-host.example", pid=1)
    claimed = claim_as(runner, "foreign", foreign, 4)
    assert len(claimed) == 4

    time.sleep(0.6)  # the foreign lease expires
    summary = runner.run("foreign", [{"seed": seed} for seed in range(4)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2, 3]

    now = utc_now()
    late = Outcome(run_id=claimed[0], started_at=now, finished_at=now, result_pickle=pickle.dumps({"square": -1}))
    assert runner.store.record(foreign, [late]) == [claimed[0]]
    assert runner.results("foreign")[0] == {"specification": {"seed": 0}, "result": {"square": 0}}


def test_a_live_foreign_claim_is_left_alone(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    foreign = Owner(lease_seconds=600, host="another-host.example", pid=1)
    claim_as(runner, "busy", foreign, 3)
    summary = runner.run("busy", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert summary.completed == []
    assert {status for status, _, _ in statuses(sqlite_path).values()} == {"running"}


def test_a_dead_process_on_this_host_is_reclaimed_at_once(sqlite_path: str) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runner = ExperimentRunner(sqlite_path)
    claim_as(runner, "orphans", Owner(lease_seconds=600, pid=dead.pid), 3)
    assert {status for status, _, _ in statuses(sqlite_path).values()} == {"running"}
    summary = runner.run("orphans", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 2]
    assert [attempts for _, attempts, _ in statuses(sqlite_path).values()] == [2, 2, 2]


def test_results_are_stored_within_a_second_while_the_batch_still_runs(tmp_path: Path) -> None:
    database, markers = str(tmp_path / "live.db"), tmp_path / "markers"
    runner = start_runner(database, "live", 3, markers, "--sleep", "3")
    try:
        deadline = time.monotonic() + 30
        while not finish_times(markers) and time.monotonic() < deadline:
            time.sleep(0.02)
        (seed, finished), *_ = finish_times(markers)
        time.sleep(max(0.0, finished + 1 - time.time()))
        assert statuses(database)[seed][0] == "completed"  # while the next 3 s run is still going
        assert runner.poll() is None
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()


def test_timestamps_are_utc(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    before = datetime.utcnow() - timedelta(seconds=5)
    runner.run("utc", [{"seed": 1}], Square(), show_progress=False)
    with sqlite3.connect(sqlite_path) as connection:
        (started,) = connection.execute("SELECT started_at FROM runs").fetchone()
    assert before <= datetime.fromisoformat(started) <= datetime.utcnow() + timedelta(seconds=5)


def test_a_runner_keeps_renewing_its_lease_while_a_long_run_goes_on(tmp_path: Path) -> None:
    database, markers = str(tmp_path / "lease.db"), tmp_path / "markers"
    runner = start_runner(database, "lease", 1, markers, "--sleep", "2.5", "--lease", "0.6")
    try:
        leases = set()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with sqlite3.connect(database) as connection:
                row = connection.execute("SELECT status, lease_expires_at FROM runs").fetchone()
            if row is not None and row[0] == "running":
                lease = datetime.fromisoformat(row[1])
                assert lease > datetime.utcnow() - timedelta(seconds=0.3), "the lease lapsed while the run went on"
                leases.add(lease)
            time.sleep(0.05)
        assert len(leases) >= 3  # renewed every 0.2 s
        assert runner.wait(timeout=30) == 0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
