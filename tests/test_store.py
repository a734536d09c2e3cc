"""The store's claims, compare-and-set and requeuing, and the lease keeper, driven step by step: each test fails at
once, without waiting for a timeout, if one of their conditions is dropped."""

from __future__ import annotations

import json
import pickle
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from smallab_db import ExperimentRunner, liveness
from smallab_db import recorder as recorder_module
from smallab_db.claims import Claims, share
from smallab_db.lease import LeaseKeeper
from smallab_db.recorder import Recorder
from smallab_db.records import ClaimOutlook, Fate, Outcome, Owner, utc_now
from smallab_db.schema import runs
from smallab_db.specification import hashed
from smallab_db.store import RunStore
from smallab_db.write_turns import WriteTurns


def registered(database_url: str, count: int, batch: str = "b") -> tuple[ExperimentRunner, int]:
    """A runner whose batch holds pending runs for seeds 0…count-1."""
    runner = ExperimentRunner(database_url)
    batch_id = runner.store.ensure_batch(batch)
    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(count)])), rerun_all=False)
    return runner, batch_id


def run_rows(runner: ExperimentRunner) -> dict[int, Any]:
    """Every run row by id."""
    with runner.engine.connect() as connection:
        return {row.id: row for row in connection.execute(sa.select(runs))}


def completed(run_id: int, value: int) -> Outcome:
    """A completed outcome of ``run_id`` whose result is ``{"value": value}``."""
    now = utc_now()
    result = {"value": value}
    return Outcome(run_id, now, now, result_pickle=pickle.dumps(result), result_json=json.dumps(result))


def expire_lease(runner: ExperimentRunner, run_ids: list[int]) -> None:
    """Move the lease of these runs into the past, as if their owner had stopped renewing long ago."""
    with runner.engine.begin() as connection:
        past = utc_now() - timedelta(hours=1)
        connection.execute(sa.update(runs).where(runs.c.id.in_(run_ids)).values(lease_expires_at=past))


def test_a_claim_takes_only_pending_runs(database_url: str) -> None:
    runner, batch_id = registered(database_url, 5)
    owner = Owner(lease_seconds=600)
    first = runner.store.claim(batch_id, owner, 3)
    second = runner.store.claim(batch_id, owner, 3)
    assert len(first) == 3 and len(second) == 2
    assert not {run_id for run_id, _ in first} & {run_id for run_id, _ in second}
    assert runner.store.claim(batch_id, Owner(lease_seconds=600), 10) == []  # running runs are not taken again
    assert runner.store.record(owner.token, [completed(run_id, 1) for run_id, _ in first + second]) == {}
    assert runner.store.claim(batch_id, owner, 10) == []  # nor completed ones


def test_a_late_result_is_refused_while_the_new_owner_still_runs_the_run(database_url: str) -> None:
    """The compare-and-set on the claim token: the old owner's result arrives while the run is running again,
    under the new owner's claim, and must not be stored."""
    runner, batch_id = registered(database_url, 1)
    old, new = Owner(lease_seconds=600, host="old-host.example", pid=1), Owner(lease_seconds=600)
    [(run_id, _)] = runner.store.claim(batch_id, old, 1)
    expire_lease(runner, [run_id])
    assert runner.store.reclaim_abandoned(batch_id, new) == 1
    assert [claimed for claimed, _ in runner.store.claim(batch_id, new, 1)] == [run_id]

    assert runner.store.record(old.token, [completed(run_id, -1)]) == {run_id: Fate.CLAIM_LOST}
    row = run_rows(runner)[run_id]
    assert (row.status, row.claim_token, row.result, row.result_json) == ("running", new.token, None, None)

    assert runner.store.record(new.token, [completed(run_id, 7)]) == {}
    row = run_rows(runner)[run_id]
    assert (row.status, row.result_json) == ("completed", {"value": 7})


def test_an_outcome_of_a_deleted_run_is_reported_deleted(database_url: str) -> None:
    runner, batch_id = registered(database_url, 2)
    owner = Owner(lease_seconds=600)
    claimed = [run_id for run_id, _ in runner.store.claim(batch_id, owner, 2)]
    runner.store.delete_batch(batch_id)
    assert runner.store.record(owner.token, [completed(run_id, 1) for run_id in claimed]) == dict.fromkeys(
        claimed, Fate.DELETED
    )


def test_recording_again_after_a_lost_acknowledgement_counts_as_stored(database_url: str) -> None:
    """A transaction that committed although the connection dropped before saying so is tried again; the second
    try finds the outcome stored and must not call it refused."""
    runner, batch_id = registered(database_url, 1)
    owner = Owner(lease_seconds=600)
    [(run_id, _)] = runner.store.claim(batch_id, owner, 1)
    assert runner.store.record(owner.token, [completed(run_id, 1)]) == {}
    assert runner.store.record(owner.token, [completed(run_id, 1)]) == {}


def backend_waiting_for_a_lock(admin: Any, database: str) -> bool:
    """Whether a session of ``database`` is waiting for a row lock."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
    return admin.execute(query, (database,)).fetchone()[0] > 0


def test_requeuing_does_not_undo_a_claim_taken_since_it_read_the_status(postgres_url: str) -> None:
    """On PostgreSQL another runner can claim a failed run (after requeuing it itself) between the moment
    ``register`` reads it as failed and the moment it requeues it; the requeue must then leave the claim alone."""
    psycopg = pytest.importorskip("psycopg")
    runner, batch_id = registered(postgres_url, 1)
    owner = Owner(lease_seconds=600)
    [(run_id, _)] = runner.store.claim(batch_id, owner, 1)
    now = utc_now()
    failed = Outcome(run_id=run_id, started_at=now, finished_at=now, error_type="ValueError", error_message="x")
    assert runner.store.record(owner.token, [failed]) == {}

    database = sa.make_url(postgres_url).database
    plain_url = postgres_url.replace("+psycopg", "")
    with psycopg.connect(plain_url) as other, psycopg.connect(plain_url, autocommit=True) as admin:
        other.execute("UPDATE runs SET status = 'running', claim_token = 'other' WHERE id = %s", (run_id,))
        requeuer = threading.Thread(
            target=runner.store.register, args=(batch_id, list(hashed([{"seed": 0}])), False), daemon=True
        )
        requeuer.start()  # reads the run as failed (the other change is not committed), then waits for its lock
        deadline = time.monotonic() + 60
        while not backend_waiting_for_a_lock(admin, database) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend_waiting_for_a_lock(admin, database), "the requeue never waited for the row lock"
        other.commit()
        requeuer.join(timeout=60)
        assert not requeuer.is_alive()
    row = run_rows(runner)[run_id]
    assert (row.status, row.claim_token) == ("running", "other")


def lease_of(runner: ExperimentRunner, run_id: int) -> Any:
    return run_rows(runner)[run_id].lease_expires_at


def test_renewing_pushes_the_lease_back_and_reports_the_claims_still_held(database_url: str) -> None:
    runner, batch_id = registered(database_url, 2)
    owner = Owner(lease_seconds=600)
    kept, lost = (run_id for run_id, _ in runner.store.claim(batch_id, owner, 2))
    expire_lease(runner, [kept, lost])
    with runner.engine.begin() as connection:  # another runner took one over
        connection.execute(sa.update(runs).where(runs.c.id == lost).values(claim_token="someone-else"))
    keeper = LeaseKeeper(runner.store, owner, on_renewal=lambda held: None)
    assert keeper.renew() == {kept}
    assert lease_of(runner, kept).replace(tzinfo=None) > utc_now().replace(tzinfo=None) + timedelta(seconds=500)


def test_the_lease_keeper_renews_on_its_own_until_stopped(database_url: str) -> None:
    """Deterministic in what it checks: the keeper's thread renews again and again (seen in the database) and
    reports the claims it holds; only the 60 s cap on waiting is a time."""
    runner, batch_id = registered(database_url, 1)
    owner = Owner(lease_seconds=0.3)
    [(run_id, _)] = runner.store.claim(batch_id, owner, 1)
    reports: list[set[int]] = []
    keeper = LeaseKeeper(runner.store, owner, on_renewal=reports.append)
    keeper.start()
    try:
        seen = {lease_of(runner, run_id)}
        deadline = time.monotonic() + 60
        while len(seen) < 4 and time.monotonic() < deadline:
            seen.add(lease_of(runner, run_id))
            time.sleep(0.01)
    finally:
        keeper.stop()
    assert len(seen) >= 4, "the lease was not renewed three times within 60 s"
    assert reports and all(report == {run_id} for report in reports)
    after_stop = lease_of(runner, run_id)
    time.sleep(1)  # ten renewal intervals: a keeper that had not stopped would have renewed
    assert lease_of(runner, run_id) == after_stop


def test_claims_renew_before_handing_out_after_a_stall_and_drop_the_lost_ones(database_url: str) -> None:
    """A runner that stalled for longer than two thirds of its lease checks its claims before starting the next
    run, and starts none that another runner took over meanwhile."""
    runner, batch_id = registered(database_url, 4)
    owner = Owner(lease_seconds=0.3)
    store: RunStore = runner.store
    claims = Claims(store, batch_id, owner, parallelism=4, renew=lambda: store.renew_lease(owner))
    liveness.hold(owner.token)  # as the runner's lease keeper does, without its renewals
    handed_out = iter(claims)
    first_id, _ = next(handed_out)  # claims all four, hands out one
    with runner.engine.begin() as connection:  # meanwhile another runner takes over the other three
        taken_over = {
            "claim_token": "elsewhere",
            "host": "other.example",
            "lease_expires_at": utc_now() + timedelta(hours=1),
        }
        connection.execute(sa.update(runs).where(runs.c.id != first_id).values(**taken_over))
    time.sleep(0.3)  # a stall longer than two thirds of the lease (0.2 s): any longer stall does the same
    try:
        assert list(handed_out) == []
    finally:
        liveness.let_go(owner.token)


def test_near_the_end_of_a_batch_a_claim_takes_an_even_share_of_what_is_left() -> None:
    """Runners sharing a batch finish it together: once fewer runs are pending than a full claim for each runner,
    a claim takes its share (rounded up), and never fewer than it is told to, nor more than its size."""
    assert share(100, pending=10, runners=4, at_least=1) == 3
    assert share(100, pending=7, runners=4, at_least=5) == 5  # 2 each, but at least 5
    assert share(100, pending=400, runners=4, at_least=1) == 100  # a full claim each: no sharing yet
    assert share(100, pending=399, runners=4, at_least=1) == 100  # 100 each, rounded up
    assert share(100, pending=300, runners=4, at_least=1) == 75
    assert share(3, pending=10, runners=1, at_least=1) == 3  # alone: no sharing
    assert share(3, pending=1, runners=2, at_least=5) == 3  # never more than its size


def test_the_claim_outlook_says_how_many_runners_hold_claims_and_where_pending_runs_lie(database_url: str) -> None:
    """Runners holding live claims in the batch count, the reader's included; pending runs are given by the span of
    their ids, which is their number while they lie together."""
    runner, batch_id = registered(database_url, 5)
    elsewhere = runner.store.ensure_batch("elsewhere")
    runner.store.register(elsewhere, list(hashed([{"seed": 1}])), rerun_all=False)
    assert len(runner.store.claim(elsewhere, Owner(lease_seconds=600), 1)) == 1  # a runner of another batch
    me, other, third = (Owner(lease_seconds=600) for _ in range(3))
    assert runner.store.claim_outlook(batch_id, me) == ClaimOutlook(pending=5, runners=1)  # alone here
    runner.store.claim(batch_id, me, 1)
    [(others_run, _)] = runner.store.claim(batch_id, other, 1)
    assert runner.store.claim_outlook(batch_id, me) == ClaimOutlook(pending=3, runners=2)
    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(5, 10)])), rerun_all=False)
    # 8 pending, and the other batch's run lies among them: their ids span 9
    assert runner.store.claim_outlook(batch_id, me) == ClaimOutlook(pending=9, runners=2)
    [(run_id, _)] = runner.store.claim(batch_id, third, 1)
    assert runner.store.claim_outlook(batch_id, me).runners == 3
    assert runner.store.record(third.token, [completed(run_id, 1)]) == {}  # a runner holding nothing now
    assert runner.store.claim_outlook(batch_id, me).runners == 2
    expire_lease(runner, [others_run])  # a runner that stopped renewing
    assert runner.store.claim_outlook(batch_id, me).runners == 1
    runner.store.claim(batch_id, third, 20)
    assert runner.store.claim_outlook(batch_id, me).pending == 0  # nothing pending


def test_a_shared_claim_is_sized_in_its_turn_by_what_the_others_left(database_url: str) -> None:
    """Between a runner's outlook and its write turn the others claim: the claim reads the span of what is left
    again in its turn, never fewer than the runs pending, and claims nothing when none is left."""
    runner, batch_id = registered(database_url, 30)
    me, other = Owner(lease_seconds=600), Owner(lease_seconds=600)
    assert runner.store.claim_outlook(batch_id, me).pending == 30
    claimed = [run_id for run_id, _ in runner.store.claim(batch_id, other, 30)]
    done = [completed(run_id, 1) for index, run_id in enumerate(claimed) if index % 10]
    assert runner.store.record(other.token, done) == {}
    assert runner.store.release(other, []) == 3  # the 1st, 11th and 21st runs are pending again: 21 ids apart
    spans: list[int] = []

    def two(span: int) -> int:
        spans.append(span)
        return 2

    assert [run_id for run_id, _ in runner.store.claim(batch_id, me, 30, shared=two)] == [claimed[0], claimed[10]]
    assert [run_id for run_id, _ in runner.store.claim(batch_id, me, 30, shared=two)] == [claimed[20]]
    assert spans == [21, 1]
    assert runner.store.claim(batch_id, me, 30, shared=two) == [] and spans == [21, 1]  # none left: not asked


def test_a_run_completed_after_a_failure_keeps_no_trace_of_the_failure(database_url: str) -> None:
    """A completion stored with the short statement clears the error a failed attempt left."""
    runner, batch_id = registered(database_url, 1)
    owner = Owner(lease_seconds=600)
    [(run_id, _)] = runner.store.claim(batch_id, owner, 1)
    now = utc_now()
    failed = Outcome(run_id, now, now, error_type="ValueError", error_message="bad", traceback="Traceback ...")
    assert runner.store.record(owner.token, [failed]) == {}
    runner.store.requeue(batch_id, "failed")
    [(again, _)] = runner.store.claim(batch_id, owner, 1)
    assert again == run_id
    assert runner.store.record(owner.token, [completed(run_id, 3)]) == {}
    row = run_rows(runner)[run_id]
    assert (row.status, row.attempts, row.result_json) == ("completed", 2, {"value": 3})
    assert (row.error_type, row.error_message, row.traceback, row.lease_expires_at) == (None, None, None, None)


def test_a_group_mixing_completions_and_failures_is_stored_whole(database_url: str) -> None:
    runner, batch_id = registered(database_url, 3)
    owner = Owner(lease_seconds=600)
    first, second, third = (run_id for run_id, _ in runner.store.claim(batch_id, owner, 3))
    now = utc_now()
    failed = Outcome(second, now, now, error_type="ValueError", error_message="bad", executions=2)
    printed = completed(third, 9)
    printed.output = "a line\n"
    assert runner.store.record(owner.token, [completed(first, 1), failed, printed]) == {}
    rows = run_rows(runner)
    assert (rows[first].status, rows[first].attempts, rows[first].output) == ("completed", 1, None)
    assert (rows[second].status, rows[second].attempts, rows[second].error_type) == ("failed", 2, "ValueError")
    assert (rows[third].status, rows[third].result_json, rows[third].output) == ("completed", {"value": 9}, "a line\n")


def test_a_claim_stores_the_queued_outcomes_in_its_own_write_turn(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runners sharing a file wait for one turn instead of two: the outcomes queued are written in the turn of the
    next claim, and their verdicts handed on."""
    monkeypatch.setattr(recorder_module, "FLUSH_INTERVAL_SECONDS", 600.0)  # nothing is stored on its own
    turns: list[str] = []
    original_turn = WriteTurns.turn

    def counted(self: WriteTurns) -> Any:
        turns.append("again" if self._holder == threading.get_ident() else "taken")
        return original_turn(self)

    monkeypatch.setattr(WriteTurns, "turn", counted)
    runner, batch_id = registered(database_url, 5)
    owner = Owner(lease_seconds=600)
    first = [run_id for run_id, _ in runner.store.claim(batch_id, owner, 3)]
    verdicts: list[Any] = []
    recorder = Recorder(runner.store, owner, on_verdicts=verdicts.extend)
    try:
        for run_id in first:
            recorder.submit(completed(run_id, run_id))
        assert {run_rows(runner)[run_id].status for run_id in first} == {"running"}  # queued
        turns.clear()
        claimed = recorder.store_with(lambda in_turn: runner.store.claim(batch_id, owner, 2, in_turn))
        assert len(claimed) == 2
        assert {run_rows(runner)[run_id].status for run_id in first} == {"completed"}
        assert sorted(verdict.outcome.run_id for verdict in verdicts) == first
        assert {verdict.fate for verdict in verdicts} == {Fate.STORED}
        assert turns.count("taken") == 1 and turns.count("again") == 2  # storing and claiming, in one turn
    finally:
        recorder.close()
