"""The PostgreSQL server restarts in the middle of a batch: the runners reconnect and go on, and every specification
executes once. The server is the test's own (the shared one must not restart under other tests)."""

from __future__ import annotations

import pickle
from pathlib import Path

from private_postgres import PrivateServer
from runner_processes import completed_counts, start_runner, statuses, wait_for_completed
from workloads import executions

COUNT = 120


def test_runners_reconnect_after_a_server_restart_and_finish_the_batch(
    own_postgres_server: PrivateServer, tmp_path: Path
) -> None:
    database, markers = own_postgres_server.create_database("restarted"), tmp_path / "markers"
    runners = [
        start_runner(database, "restarted", COUNT, markers, "--sleep", "0.05", "--parallel", str(parallel))
        for parallel in (1, 2)
    ]
    wait_for_completed(database, 20, runners[0])
    # Every connection drops and transactions in progress roll back; the server stays down for longer than a runner
    # goes between writes (its outcomes are stored within 0.1 s), so that each meets the outage.
    own_postgres_server.restart(down_seconds=1.0)
    assert all(runner.poll() is None for runner in runners), "a runner ended before the restart"
    done_at_restart = sum(status == "completed" for status, _, _ in statuses(database).values())
    assert done_at_restart < COUNT, "the batch finished before the restart: make it longer"

    outputs = [runner.communicate(timeout=240) for runner in runners]
    for runner, (_, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, err
    retried = [err for _, err in outputs if "trying again" in err]
    assert len(retried) == len(runners), "a runner did not meet the outage: the test proved nothing of it"
    assert executions(markers) == {seed: 1 for seed in range(COUNT)}
    stored = statuses(database)
    assert {status for status, _, _ in stored.values()} == {"completed"} and len(stored) == COUNT
    assert all(pickle.loads(result)["seed"] == seed for seed, (_, _, result) in stored.items())
    done = completed_counts(outputs)
    assert sum(done) == COUNT and min(done) > 0, done
