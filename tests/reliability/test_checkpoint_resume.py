"""Checkpointed smallab 2.x experiments against real processes and signals, on SQLite and PostgreSQL: a runner
SIGKILLed mid-run resumes each run from its newest checkpoint on the next ``run`` (from another folder, as on
another machine sharing the database); a worker whose claim was taken over writes nothing more; two runners
sharing a batch run every step once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dill
import pytest
import sqlalchemy as sa
from processes import kill_group, spawn
from runner_processes import wait_for_sessions_to_end
from smallab2_workloads import steps_run

from smallab_db.database import create_engine, resolve_url
from smallab_db.schema import checkpoints, runs

WORKLOAD = Path(__file__).resolve().parent.parent / "smallab2_workloads.py"


def start(database: str, folder: Path, markers: Path, count: int, steps: int, *options: str) -> subprocess.Popen[str]:
    """Start a runner of ``Counting`` in ``folder``, its own process group, and wait until it opened the database."""
    folder.mkdir(exist_ok=True)
    markers.mkdir(exist_ok=True)
    process: subprocess.Popen[str] = spawn(
        [sys.executable, str(WORKLOAD), database, "counting", str(markers), str(count), str(steps), *options],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started", process.stderr and process.stderr.read()
    return process


def wait_until(condition: Any, what: str, process: subprocess.Popen[str] | None = None, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"the runner ended before {what}"
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.02)


def rows(database: str) -> dict[int, Any]:
    """Each run by seed, with its checkpoints' states (oldest first) as ``states``."""
    engine = create_engine(resolve_url(database))
    try:
        with engine.connect() as connection:
            found = {row.specification["seed"]: row._asdict() for row in connection.execute(sa.select(runs))}
            for row in found.values():
                query = sa.select(checkpoints.c.id, checkpoints.c.state).where(checkpoints.c.run_id == row["id"])
                row["states"] = [tuple(state) for state in connection.execute(query.order_by(checkpoints.c.id))]
        return found
    finally:
        engine.dispose()


@pytest.mark.parametrize(("parallel", "count"), [("0", 1), ("2", 2)], ids=["serial", "worker-processes"])
def test_a_run_killed_mid_run_resumes_from_its_newest_checkpoint_elsewhere(
    database_url: str, tmp_path: Path, parallel: str, count: int
) -> None:
    markers, seeds = tmp_path / "markers", range(count)
    runner = start(database_url, tmp_path / "here", markers, count, 30, "--sleep", "0.1", "--parallel", parallel)
    wait_until(lambda: all(len(steps_run(markers, seed)) >= 6 for seed in seeds), "6 steps of each run", runner)
    kill_group(runner)  # SIGKILL, the workers too
    runner.wait(timeout=30)
    time.sleep(0.3)  # let killed workers disappear
    wait_for_sessions_to_end(database_url)
    before = {seed: steps_run(markers, seed) for seed in seeds}

    killed = rows(database_url)
    newest = {}
    for seed in seeds:
        assert killed[seed]["status"] == "running"
        states = killed[seed]["states"]
        assert 1 <= len(states) <= 3, "the newest three checkpoints are kept"
        counts = [dill.loads(state).count for _, state in states]
        assert counts == sorted(counts) and counts[-1] >= 5
        newest[seed] = counts[-1]
        assert newest[seed] in (len(before[seed]), len(before[seed]) - 1)  # killed after or before checkpointing
        assert killed[seed]["progress"] is not None and killed[seed]["progress_total"] == 30

    rerun = start(database_url, tmp_path / "elsewhere", markers, count, 30, "--sleep", "0.01", "--parallel", parallel)
    out, err = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, err
    assert f"completed={count} failed=0" in out

    done = rows(database_url)
    for seed in seeds:
        again = steps_run(markers, seed)[len(before[seed]) :]
        assert [step for step, _ in again] == list(range(newest[seed] + 1, 31)), "resumed from the newest checkpoint"
        assert not {pid for _, pid in again} & {pid for _, pid in before[seed]}, "the re-run ran in new processes"
        assert done[seed]["status"] == "completed" and done[seed]["states"] == []
        assert dill.loads(done[seed]["result"]) == {"count": 30, "seed": seed}
        assert done[seed]["attempts"] == 2
        assert "step 30 of 30" in done[seed]["output"] and "resuming from checkpoint 0" in done[seed]["output"]
    assert not (tmp_path / "elsewhere" / "experiment_runs" / "counting" / "checkpoints").exists()


def test_a_worker_whose_claim_was_taken_over_writes_nothing_more(database_url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    runner = start(database_url, tmp_path / "here", markers, 1, 400, "--sleep", "0.1", "--parallel", "2")
    wait_until(lambda: len(steps_run(markers, 0)) >= 3, "3 steps", runner)
    engine = create_engine(resolve_url(database_url))
    with engine.begin() as connection:  # another runner took the run over, as after a lapsed lease
        connection.execute(sa.update(runs).values(claim_token="another-runner", host="elsewhere", pid=1))
        last_checkpoint = connection.execute(sa.select(sa.func.max(checkpoints.c.id))).scalar_one()
        progress = connection.execute(sa.select(runs.c.progress)).scalar_one()
    engine.dispose()
    taken_over_at = len(steps_run(markers, 0))

    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert "completed=0 failed=0 skipped=0 not_stored=1" in out
    assert len(steps_run(markers, 0)) <= taken_over_at + 2, "the worker stopped at its next checkpoint"
    (run,) = rows(database_url).values()
    assert (run["claim_token"], run["status"], run["progress"]) == ("another-runner", "running", progress)
    assert max(checkpoint_id for checkpoint_id, _ in run["states"]) == last_checkpoint


def test_two_runners_sharing_a_batch_run_every_step_once(database_url: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    options = ("--sleep", "0.02", "--parallel", "2")
    first = start(database_url, tmp_path / "first", markers, 6, 8, *options)
    second = start(database_url, tmp_path / "second", markers, 6, 8, *options)
    outputs = [process.communicate(timeout=240) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], [err for _, err in outputs]
    for seed in range(6):
        assert [count for count, _ in steps_run(markers, seed)] == list(range(1, 9))
    done = rows(database_url)
    assert {run["status"] for run in done.values()} == {"completed"}
    assert all(run["states"] == [] for run in done.values())
