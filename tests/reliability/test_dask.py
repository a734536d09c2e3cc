"""Running on a Dask cluster (a real ``distributed.LocalCluster`` of 2 worker processes with 1 thread each): results
are stored as they finish, with what each run wrote, a worker killed mid-run costs only a retry of its run, a run
that keeps killing its workers fails alone, and two runner processes sharing the cluster and one PostgreSQL database
split the work."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import joblib
import processes
import pytest
from distributed import Client, LocalCluster
from output_workloads import talk, talked
from runner_processes import completed_counts, race, statuses
from workloads import DiesOnSeed, Marking, executions, started_pids

from smallab_db import ExperimentRunner, UsageError, WorkerDiedError


@pytest.fixture
def dask_client() -> Iterator[Client]:
    """A client of a new local cluster: 2 worker processes (each under a nanny that restarts it), 1 thread each.
    A worker that dies counts against its runs once (``allowed-failures`` 1), to keep the tests short."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_runs_go_to_the_cluster_and_each_result_is_stored_as_it_finishes(
    dask_client: Client, database_url: str, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    runner = ExperimentRunner(database_url)
    stored_while_running: list[tuple[int, str, float]] = []

    def check_stored(specification: dict[str, Any], result: dict[str, Any]) -> None:
        status = statuses(database_url)[specification["seed"]][0]
        stored_while_running.append((specification["seed"], status, time.monotonic()))

    runner.on_specification_complete(check_stored)
    specifications = [{"seed": 0, "sleep": 5.0}, *({"seed": seed, "sleep": 0.05} for seed in range(1, 8))]
    summary = runner.run(
        "cluster", specifications, Marking(str(markers), 0), num_parallel=None, backend="dask", show_progress=False
    )
    ended = time.monotonic()
    assert sorted(spec["seed"] for spec in summary.completed) == list(range(8)) and not summary.failed
    assert executions(markers) == {seed: 1 for seed in range(8)}
    workers = set(dask_client.run(os.getpid).values())
    results = runner.results("cluster")
    assert {run["result"]["pid"] for run in results} <= workers and os.getpid() not in workers
    assert all(status == "completed" for _, status, _ in stored_while_running)
    first_seed, _, first_stored = stored_while_running[0]
    assert first_seed != 0 and ended - first_stored > 0.5, "results were stored only when the batch ended"


def test_each_run_keeps_what_it_wrote_on_its_dask_worker(dask_client: Client, database_url: str) -> None:
    """Standard output and error and logging of runs on the cluster's workers (a thread each) are kept per run,
    failed ones too."""
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed, "pause": 0.01, "fail": seed == 1} for seed in range(4)]
    runner.run("talk", specifications, talk, num_parallel=None, backend="dask", show_progress=False)
    talked(runner, "talk", specifications)
    runner.close()


def test_a_worker_killed_mid_run_costs_a_retry_of_that_run_only(
    dask_client: Client, sqlite_path: str, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    runner = ExperimentRunner(sqlite_path)
    specifications = [{"seed": seed, "sleep": 4.0 if seed == 3 else 0.05} for seed in range(10)]
    killed: list[int] = []

    def kill_the_worker_running_seed_3() -> None:
        deadline = time.monotonic() + 60
        while not (pids := started_pids(markers, 3)) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)  # as the out-of-memory killer would
        killed.append(pids[0])

    killer = threading.Thread(target=kill_the_worker_running_seed_3, daemon=True)
    killer.start()
    summary = runner.run(
        "killed", specifications, Marking(str(markers), 0), num_parallel=None, backend="dask", show_progress=False
    )
    killer.join()
    assert killed, "the worker running seed 3 was not found"
    assert sorted(spec["seed"] for spec in summary.completed) == list(range(10)) and not summary.failed
    counts = executions(markers)
    assert counts[3] == 2 and all(counts[seed] == 1 for seed in range(10) if seed != 3), counts
    result = {run["specification"]["seed"]: run["result"] for run in runner.results("killed")}[3]
    assert result["pid"] != killed[0]


def test_a_run_that_keeps_killing_its_workers_fails_alone_and_the_batch_goes_on(
    dask_client: Client, sqlite_path: str
) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed} for seed in range(6)]
    summary = runner.run("dying", specifications, DiesOnSeed(2, "sigkill"), backend="dask", show_progress=False)
    assert summary.failed == [{"seed": 2}]
    (error,) = summary.exceptions
    assert isinstance(error, WorkerDiedError) and "died 2 times" in str(error)
    assert sorted(spec["seed"] for spec in summary.completed) == [0, 1, 3, 4, 5]
    status, attempts, _ = statuses(sqlite_path)[2]
    assert (status, attempts) == ("failed", 2)


def test_backend_dask_without_a_client_is_refused_before_anything_is_written(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(UsageError, match="create one first"):
        runner.run("nowhere", [{"seed": 1}], Marking(None, 0), backend="dask", show_progress=False)
    assert statuses(sqlite_path) == {}


def test_two_runner_processes_share_one_cluster_and_one_postgresql_database(
    dask_client: Client, postgres_url: str, tmp_path: Path
) -> None:
    markers, count = tmp_path / "markers", 60
    outputs = race(postgres_url, ["shared", "shared"], count, markers, "--scheduler", dask_client.scheduler.address)
    assert executions(markers) == {seed: 1 for seed in range(count)}
    stored = statuses(postgres_url)
    assert {(status, attempts) for status, attempts, _ in stored.values()} == {("completed", 1)}
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    done = completed_counts(outputs)
    assert sum(done) == count and min(done) > 0, done


def test_joblib_parallel_config_dask_runs_on_the_cluster_too(dask_client: Client, sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    with joblib.parallel_config(backend="dask"):
        summary = runner.run("configured", [{"seed": seed} for seed in range(6)], Marking(None, 0.01), num_parallel=2)
    assert len(summary.completed) == 6
    workers = set(dask_client.run(os.getpid).values())
    assert {run["result"]["pid"] for run in runner.results("configured")} <= workers


def test_smallab_db_run_with_a_scheduler_address_runs_on_the_cluster(
    dask_client: Client, sqlite_path: str, tmp_path: Path
) -> None:
    (tmp_path / "specs.json").write_text(json.dumps([{"seed": seed} for seed in range(6)]))
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # tests/workloads.py
    command = [
        str(Path(sys.executable).parent / "smallab-db"),
        "run",
        sqlite_path,
        "--batch",
        "scheduled",
        "--experiment",
        "workloads:ReportsPid",
        "--specs",
        "specs.json",
        "--scheduler",
        dask_client.scheduler.address,
        "--no-progress",
    ]
    ran = processes.run(command, cwd=tmp_path, env=environment, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "batch 'scheduled': 6 completed, 0 failed, 0 already completed\n"
    workers = set(dask_client.run(os.getpid).values())
    assert {pickle.loads(result)["pid"] for _, _, result in statuses(sqlite_path).values()} <= workers
