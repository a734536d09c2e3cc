"""What a worker writes while its run goes on (progress, checkpoints, produced runs) is written only while its claim
token holds the run: each test fails if the compare-and-set is dropped. On both databases, with a worker's own
engine (a ``RunLink`` opens one, as in a worker process)."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from test_store import completed, expire_lease, registered

from smallab_db import ExperimentRunner
from smallab_db.codec import canonical_json
from smallab_db.errors import ClaimLostError
from smallab_db.execution import failure
from smallab_db.records import ImportedRun, Owner, utc_now
from smallab_db.schema import checkpoints, runs
from smallab_db.specification import hash_canonical, hashed
from smallab_db.worker_writes import RunLink


def link(runner: ExperimentRunner, run_id: int, owner: Owner) -> RunLink:
    return RunLink(runner.url, run_id, owner.token)


def stored_checkpoints(runner: ExperimentRunner, run_id: int) -> list[bytes]:
    with runner.engine.connect() as connection:
        query = sa.select(checkpoints.c.state).where(checkpoints.c.run_id == run_id).order_by(checkpoints.c.id)
        return list(connection.execute(query).scalars())


def row(runner: ExperimentRunner, run_id: int) -> Any:
    with runner.engine.connect() as connection:
        return connection.execute(sa.select(runs).where(runs.c.id == run_id)).one()


def take_over(runner: ExperimentRunner, batch_id: int, run_id: int) -> Owner:
    """Another runner reclaims the run after its lease lapsed, as a runner on another host would."""
    expire_lease(runner, [run_id])
    other = Owner(lease_seconds=600)
    assert runner.store.reclaim_abandoned(batch_id, other) == 1
    assert [claimed for claimed, _ in runner.store.claim(batch_id, other, 1)] == [run_id]
    return other


def one_claimed_run(database_url: str) -> tuple[ExperimentRunner, int, int, Owner]:
    """A runner, its batch, and the batch's one run claimed by the returned owner."""
    runner, batch_id = registered(database_url, 1)
    owner = Owner(lease_seconds=600)
    ((run_id, _),) = runner.store.claim(batch_id, owner, 1)
    return runner, batch_id, run_id, owner


def produced(specification: dict[str, Any], result: dict[str, Any]) -> ImportedRun:
    canonical = canonical_json(specification)
    return ImportedRun(hash_canonical(canonical), canonical, pickle.dumps(result), None)


def test_a_worker_whose_claim_was_lost_writes_nothing(database_url: str) -> None:
    runner, batch_id, run_id, owner = one_claimed_run(database_url)
    old = link(runner, run_id, owner)
    old.save_checkpoint(b"old 1", keep=3)
    old.report_progress(1, 10)

    new = link(runner, run_id, take_over(runner, batch_id, run_id))
    with pytest.raises(ClaimLostError, match="taken over by another runner"):
        old.save_checkpoint(b"old 2", keep=3)
    with pytest.raises(ClaimLostError):
        old.report_progress(2, 10)
    with pytest.raises(ClaimLostError):
        old.store_outputs([produced({"seed": 99}, {"late": True})])
    assert stored_checkpoints(runner, run_id) == [b"old 1"]
    assert (row(runner, run_id).progress, row(runner, run_id).progress_total) == (1, 10)
    assert runner.store.find_batch("b") is not None and len(list(runner.store.iter_runs(batch_id, None))) == 1

    new.save_checkpoint(b"new 1", keep=3)
    new.report_progress(5, 10)
    assert stored_checkpoints(runner, run_id) == [b"old 1", b"new 1"]
    assert new.checkpoint_states() == [b"new 1", b"old 1"]  # newest first: the new owner resumes from the old state
    assert row(runner, run_id).progress == 5


def test_a_run_that_is_not_running_takes_no_writes(database_url: str) -> None:
    runner, batch_id = registered(database_url, 2)
    owner = Owner(lease_seconds=600)
    (first, _), (second, _) = runner.store.claim(batch_id, owner, 2)
    runner.store.record(owner.token, [completed(first, 1)])
    runner.store.release(owner, [])
    for run_id in (first, second):  # completed, and back to pending
        with pytest.raises(ClaimLostError):
            link(runner, run_id, owner).save_checkpoint(b"state", keep=3)
    assert stored_checkpoints(runner, first) == stored_checkpoints(runner, second) == []


def test_the_newest_checkpoints_are_kept_and_a_completed_run_drops_them(database_url: str) -> None:
    runner, batch_id = registered(database_url, 2)
    owner = Owner(lease_seconds=600)
    (first, _), (second, _) = runner.store.claim(batch_id, owner, 2)
    for number in range(1, 6):
        link(runner, first, owner).save_checkpoint(f"state {number}".encode(), keep=3)
        link(runner, second, owner).save_checkpoint(f"state {number}".encode(), keep=3)
    assert stored_checkpoints(runner, first) == [b"state 3", b"state 4", b"state 5"]

    now = utc_now()
    failed = failure(second, now, RuntimeError("step 6 failed"), in_worker=False)
    assert runner.store.record(owner.token, [completed(first, 1), failed]) == {}
    assert stored_checkpoints(runner, first) == []  # completed: not needed any more
    assert stored_checkpoints(runner, second) == [b"state 3", b"state 4", b"state 5"]  # failed: a re-run resumes


def test_an_outcome_refused_for_a_lost_claim_leaves_the_checkpoints(database_url: str) -> None:
    runner, batch_id, run_id, owner = one_claimed_run(database_url)
    link(runner, run_id, owner).save_checkpoint(b"state", keep=3)
    take_over(runner, batch_id, run_id)
    assert runner.store.record(owner.token, [completed(run_id, 1)]) != {}
    assert stored_checkpoints(runner, run_id) == [b"state"]  # the new owner resumes from it


def test_produced_runs_are_stored_completed_without_undoing_other_runs(database_url: str) -> None:
    runner, batch_id = registered(database_url, 0)
    specifications = [{"parent": 1}, {"pending": 1}, {"failed": 1}, {"completed": 1}, {"running": 1}]
    runner.store.register(batch_id, list(hashed(specifications)), rerun_all=False)
    run_id = {next(iter(row.specification)): row.id for row in runner.store.iter_runs(batch_id, None)}
    worker, other = Owner(lease_seconds=600), Owner(lease_seconds=600)
    states = {
        "parent": {"status": "running", "claim_token": worker.token},
        "failed": {"status": "failed"},
        "completed": {"status": "completed", "result": pickle.dumps({"value": 7})},
        "running": {"status": "running", "claim_token": other.token},
    }
    with runner.engine.begin() as connection:
        for key, values in states.items():
            connection.execute(sa.update(runs).where(runs.c.id == run_id[key]).values(**values))

    outputs = [produced(specification, {"from": "worker"}) for specification in [*specifications[1:], {"new": 1}]]
    link(runner, run_id["parent"], worker).store_outputs(outputs)

    by_key = {
        next(iter(row.specification)): (row.status, row.result and pickle.loads(row.result))
        for row in runner.store.iter_runs(batch_id, None)
    }
    assert by_key == {
        "parent": ("running", None),
        "pending": ("completed", {"from": "worker"}),
        "failed": ("completed", {"from": "worker"}),
        "new": ("completed", {"from": "worker"}),
        "completed": ("completed", {"value": 7}),  # kept as it was
        "running": ("running", None),  # another runner's run: left alone
    }


def test_a_reclaim_that_commits_first_refuses_the_worker_s_checkpoint(postgres_url: str) -> None:
    """On PostgreSQL the compare-and-set waits on the row lock of a reclaim in progress, then sees the new owner."""
    runner, batch_id, run_id, owner = one_claimed_run(postgres_url)
    worker = link(runner, run_id, owner)
    worker.save_checkpoint(b"before", keep=3)
    outcome: list[BaseException | None] = []

    with runner.engine.connect() as reclaiming, reclaiming.begin():
        reclaiming.execute(sa.update(runs).where(runs.c.id == run_id).values(claim_token="taken-over-by-another"))

        def checkpoint() -> None:
            try:
                worker.save_checkpoint(b"during", keep=3)
                outcome.append(None)
            except ClaimLostError as error:
                outcome.append(error)

        writer = threading.Thread(target=checkpoint)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive(), "the worker's write did not wait for the row lock"
    writer.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], ClaimLostError)
    assert stored_checkpoints(runner, run_id) == [b"before"]
