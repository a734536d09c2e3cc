"""A worker process that dies (os._exit, segfault, SIGKILL as from the OOM killer) fails its run, not the batch."""

from __future__ import annotations

import sqlite3

import pytest
from workloads import DiesOnSeed

from smallab_db import ExperimentRunner, WorkerDiedError

CAUSES = {
    "exit": "exited without returning (os._exit",
    "segfault": "segmentation fault (SIGSEGV)",
    "sigkill": "killed with SIGKILL, which the out-of-memory killer sends",
}


@pytest.mark.parametrize("how", sorted(CAUSES))
def test_a_dying_worker_fails_its_run_with_the_cause_and_the_batch_goes_on(sqlite_path: str, how: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed} for seed in range(12)]
    summary = runner.run("dying", specifications, DiesOnSeed(5, how), num_parallel=2, show_progress=False)
    assert summary.failed == [{"seed": 5}]
    (error,) = summary.exceptions
    assert isinstance(error, WorkerDiedError)
    assert CAUSES[how] in str(error)
    assert sorted(spec["seed"] for spec in summary.completed) == [seed for seed in range(12) if seed != 5]
    with sqlite3.connect(sqlite_path) as connection:
        rows = connection.execute(
            "SELECT json_extract(specification, '$.seed'), status, attempts, error_type, error_message FROM runs"
        ).fetchall()
    by_seed = {seed: (status, attempts, error_type, message) for seed, status, attempts, error_type, message in rows}
    status, attempts, error_type, message = by_seed[5]
    assert (status, attempts, error_type) == ("failed", 2, "smallab_db.errors.WorkerDiedError")
    assert CAUSES[how] in message
    assert all(by_seed[seed][0] == "completed" for seed in by_seed if seed != 5)
    assert all(by_seed[seed][1] in (1, 2) for seed in by_seed)  # runs in flight beside it ran again
    results = runner.results("dying")
    assert sorted(run["result"]["seed"] for run in results) == [seed for seed in range(12) if seed != 5]


def test_a_worker_dying_among_short_runs_that_workers_store_fails_only_its_run(
    sqlite_path: str, handed_back_by_id: list[int]
) -> None:
    """Workers store short runs themselves and hand the completed ones back by id: those finished before the death
    are counted once and not run again; the runs in flight beside the dying one run again and complete."""
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed} for seed in range(4000)]
    dies = DiesOnSeed(2500, "exit", pause=0)
    summary = runner.run("dying", specifications, dies, num_parallel=2, show_progress=False)
    assert summary.failed == [{"seed": 2500}]
    assert sorted(spec["seed"] for spec in summary.completed) == [seed for seed in range(4000) if seed != 2500]
    with sqlite3.connect(sqlite_path) as connection:
        rows = connection.execute("SELECT id, json_extract(specification, '$.seed'), status, attempts FROM runs")
        by_id = {run_id: (seed, status, attempts) for run_id, seed, status, attempts in rows}
    assert by_id.pop(next(run_id for run_id, row in by_id.items() if row[0] == 2500))[1:] == ("failed", 2)
    assert all(status == "completed" and attempts in (1, 2) for _, status, attempts in by_id.values())
    assert handed_back_by_id and len(handed_back_by_id) == len(set(handed_back_by_id))
    assert all(by_id[run_id][2] == 1 for run_id in handed_back_by_id)  # not run again
