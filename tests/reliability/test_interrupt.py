"""Ctrl-C during a batch: finished results are stored, unfinished claims return to pending, the process exits; on a
SQLite file and on PostgreSQL."""

from __future__ import annotations

import pickle
import signal
from pathlib import Path

import pytest
from processes import kill_group
from runner_processes import start_runner, statuses, wait_for_completed
from workloads import executions


@pytest.mark.parametrize("parallel", [1, 2])
def test_ctrl_c_keeps_results_and_returns_claims_to_pending(database_url: str, tmp_path: Path, parallel: int) -> None:
    database, markers = database_url, tmp_path / "markers"
    runner = start_runner(database, "interrupted", 40, markers, "--sleep", "0.1", "--parallel", str(parallel))
    wait_for_completed(database, 4, runner)
    kill_group(runner, signal.SIGINT)  # what Ctrl-C in a terminal does: the runner and its workers get SIGINT
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
