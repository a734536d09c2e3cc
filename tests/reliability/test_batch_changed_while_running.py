"""Commands that change a batch while a runner works on it: the runner's summary and hooks report exactly what was
stored, each run once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import processes
from test_cli import SCRIPT

from smallab_db import ExperimentRunner
from smallab_db.specification import hashed

SEEDS = [{"seed": seed} for seed in range(8)]


def completed_seeds(database: str, batch: str) -> set[int]:
    with sqlite3.connect(database) as connection:
        query = "SELECT json_extract(specification, '$.seed') FROM run_details WHERE batch = ? AND status = 'completed'"
        return {seed for (seed,) in connection.execute(query, (batch,))}


def test_rm_during_a_run_reports_only_what_was_stored_before(tmp_path: Path) -> None:
    """``smallab-db rm`` deletes the batch while run 3 executes: the runs stored before count as completed (their
    hook was called), every later outcome is listed in ``not_stored`` and calls no hook."""
    database = str(tmp_path / "rm.db")
    stored_before_rm: set[int] = set()
    executed: list[int] = []

    def experiment(specification: dict[str, Any]) -> dict[str, Any]:
        seed = specification["seed"]
        executed.append(seed)
        if seed == 3:
            deadline = time.monotonic() + 60  # let runs 0…2 be stored first
            while len(completed_seeds(database, "doomed")) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            stored_before_rm.update(completed_seeds(database, "doomed"))
            removed = processes.run([str(SCRIPT), "rm", database, "--batch", "doomed", "--yes"], timeout=120)
            assert removed.returncode == 0, removed.stderr
        return {"seed": seed}

    runner = ExperimentRunner(database)
    hooked: list[int] = []
    runner.on_specification_complete(lambda spec, result: hooked.append(spec["seed"]))
    summary = runner.run("doomed", SEEDS, experiment, show_progress=False)
    assert stored_before_rm == {0, 1, 2}
    assert sorted(spec["seed"] for spec in summary.completed) == sorted(hooked) == [0, 1, 2]
    assert sorted(spec["seed"] for spec in summary.not_stored) == [seed for seed in executed if seed >= 3]
    assert summary.failed == []
    assert runner.store.batch_counts() == []


def test_retry_during_a_run_lists_each_failed_run_once(tmp_path: Path) -> None:
    """``smallab-db retry`` puts the batch's failed runs back to pending while the runner still works: the runner
    runs them again, and its summary lists each specification once, with its latest outcome."""
    database = str(tmp_path / "retry.db")
    retried = False

    def experiment(specification: dict[str, Any]) -> dict[str, Any]:
        nonlocal retried
        seed = specification["seed"]
        if seed == 7 and not retried:  # wait for the failures of 1, 3 and 5 to be stored, then retry them
            retried = True
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with sqlite3.connect(database) as connection:
                    if connection.execute("SELECT count(*) FROM runs WHERE status = 'failed'").fetchone()[0] == 3:
                        break
                time.sleep(0.01)
            requeued = processes.run([str(SCRIPT), "retry", database, "--batch", "flaky"], text=True, timeout=120)
            assert "3 failed run(s)" in requeued.stdout, requeued.stderr
        if seed % 2:
            raise ValueError(f"odd seed {seed}")
        return {"seed": seed}

    runner = ExperimentRunner(database)
    runner.on_specification_failure(None)
    summary = runner.run("flaky", SEEDS, experiment, show_progress=False)
    assert sorted(spec["seed"] for spec in summary.failed) == [1, 3, 5, 7]
    assert len(summary.exceptions) == 4
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 2, 4, 6]
    with sqlite3.connect(database) as connection:
        attempts = dict(connection.execute("SELECT json_extract(specification, '$.seed'), attempts FROM runs"))
    assert attempts == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2, 6: 1, 7: 1}


def test_a_runner_that_reruns_everything_meanwhile_is_counted_exactly(tmp_path: Path) -> None:
    """Runner A finds 20 runs completed; while it runs the one new run, runner B registers the batch with
    ``continue_from_last_run=False``, which puts the 20 back to pending, and A runs them: A must not say it skipped
    runs that it then ran."""
    database = str(tmp_path / "rerun.db")
    old = [{"seed": seed} for seed in range(20)]
    with ExperimentRunner(database) as first:
        first.run("again", old, lambda spec: {"first": True}, show_progress=False)
    executed: list[int] = []

    def experiment(specification: dict[str, Any]) -> dict[str, Any]:
        executed.append(specification["seed"])
        if specification["seed"] == 20:  # what runner B's registration does
            with ExperimentRunner(database) as other:
                batch_id = other.store.ensure_batch("again")
                other.store.register(batch_id, list(hashed(old)), rerun_all=True)
        return {"first": False}

    with ExperimentRunner(database) as runner:
        summary = runner.run("again", [*old, {"seed": 20}], experiment, show_progress=False)
    assert sorted(executed) == list(range(21))
    assert (summary.skipped, len(summary.completed)) == (0, 21)
