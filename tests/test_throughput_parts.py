"""The parts that make runs cheap, each checked for what it must keep: registration read in one pass or looked up
hash by hash gives the same runs, and a runner that finds the batch registered writes nothing; chunk sizes follow
the pace of runs; writers take turns through the lock file without keeping it open; the claims of a runner are found
through their index; workers store their outcomes, or hand them back when they cannot; the objects alive when a batch
starts are left out of the garbage collector's passes while it runs, and put back after."""

from __future__ import annotations

import fcntl
import functools
import gc
import os
import pickle
import signal
import sqlite3
import threading
import time
import weakref
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import processes
import pytest
import sqlalchemy as sa
from file_locks import lock_state
from joblib.externals.loky import get_reusable_executor
from sqlalchemy.dialects import sqlite

from smallab_db import ExperimentRunner, heap, registration, worker_writes
from smallab_db.bulk import fetched, sqlite_timestamp
from smallab_db.experiment import Specification
from smallab_db.joblib_dispatch import execute_chunk
from smallab_db.pace import CHUNK_SECONDS, MAX_CHUNK, WORKERS_STORE_BELOW_SECONDS, Pace, seconds_taken
from smallab_db.records import Fate, Outcome, Owner, Verdict, utc_now
from smallab_db.schema import runs
from smallab_db.specification import hashed
from smallab_db.summary import Tally
from smallab_db.worker_writes import LinkOf, RunLink
from smallab_db.write_turns import LOCK_SUFFIX, WriteTurns


def square(specification: dict[str, int]) -> dict[str, int]:
    return {"square": specification["seed"] ** 2}


def odd_fails(specification: dict[str, int]) -> dict[str, int]:
    if specification["seed"] % 2:
        raise ValueError(f"odd seed {specification['seed']}")
    return {"seed": specification["seed"]}


def statuses(runner: ExperimentRunner) -> dict[int, tuple[str, int]]:
    """``seed: (status, attempts)`` of every run."""
    with runner.engine.connect() as connection:
        rows = connection.execute(sa.select(runs.c.specification, runs.c.status, runs.c.attempts))
        return {specification["seed"]: (status, attempts) for specification, status, attempts in rows}


@pytest.mark.parametrize("scan_factor", [4, 0], ids=["read-in-one-pass", "looked-up-by-hash"])
def test_both_ways_of_registering_find_the_same_runs(
    database_url: str, scan_factor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second call skips the completed runs, runs the failed ones again and adds the new ones, whether the batch's
    runs were read in one pass or each hash was looked up (as for a batch with many more runs)."""
    monkeypatch.setattr(registration, "SCAN_FACTOR", scan_factor)
    with ExperimentRunner(database_url) as runner:
        first = runner.run("b", [{"seed": seed} for seed in range(10)], odd_fails, show_progress=False)
        assert len(first.completed) == 5 and len(first.failed) == 5
        second = runner.run("b", [{"seed": seed} for seed in range(12)], odd_fails, show_progress=False)
        assert second.skipped == 5
        assert sorted(spec["seed"] for spec in second.failed) == [1, 3, 5, 7, 9, 11]
        assert sorted(spec["seed"] for spec in second.completed) == [10]
        stored = statuses(runner)
    expected = {seed: ("completed", 1) for seed in range(0, 12, 2)}
    expected |= {seed: ("failed", 2) for seed in range(1, 10, 2)} | {11: ("failed", 1)}
    assert stored == expected


def test_chunks_start_with_one_run_grow_with_fast_runs_and_shrink_at_once_for_slow_ones() -> None:
    pace = Pace()
    assert pace.chunk_size() == 1  # nothing measured: one run per chunk
    pace.measure(1, 0.000_01)
    assert pace.chunk_size() == MAX_CHUNK
    pace.measure(10, 0.1)
    assert pace.chunk_size() == round(CHUNK_SECONDS / 0.01)
    pace.measure(1, 1.0)
    assert pace.chunk_size() == 1  # a slow run: single runs at once
    sizes = []
    for _ in range(8):
        pace.measure(1, 0.000_01)
        sizes.append(pace.chunk_size())
    assert sizes == sorted(sizes) and sizes[0] < 4 and sizes[-1] == MAX_CHUNK  # grows back step by step


def test_a_chunk_s_worth_of_work_is_what_its_size_holds() -> None:
    pace = Pace()
    pace.measure(5, 5 * 0.002)
    size = pace.chunk_size()
    assert size * 0.002 <= CHUNK_SECONDS < (size + 1) * 0.002


def test_the_time_a_chunk_took_is_the_sum_of_its_runs_times() -> None:
    start = utc_now()
    outcomes = [Outcome(run_id, start, start + timedelta(seconds=0.25 * run_id)) for run_id in range(4)]
    assert seconds_taken(outcomes) == pytest.approx(1.5)
    assert seconds_taken([]) == 0


def test_workers_store_the_outcomes_of_short_runs_only() -> None:
    """Storing a short run costs the calling process more than running it costs a worker, so workers store those;
    the calling process stores longer ones, and the first chunk's, before the pace is known."""
    pace = Pace()
    assert not pace.runs_are_short()
    pace.measure(100, 100 * WORKERS_STORE_BELOW_SECONDS / 10)
    assert pace.runs_are_short()
    pace.measure(2, 2 * WORKERS_STORE_BELOW_SECONDS * 10)
    assert not pace.runs_are_short()


def lock_files_open(path: Path) -> list[str]:
    """The descriptors of this process open on the database's lock file."""
    folder = Path("/proc/self/fd")
    found = []
    for entry in folder.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target == str(path) + LOCK_SUFFIX:
            found.append(target)
    return found


def test_an_error_while_fetching_rows_comes_as_sqlalchemy_raises_it(tmp_path: Path) -> None:
    """SQLite computes a result's rows after the first one while they are fetched: an error there comes as
    SQLAlchemy's error of the driver's, which the store turns into a ``DatabaseError`` naming the database."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    overflow_on_second_row = (
        "SELECT CASE WHEN value = 2 THEN abs(-9223372036854775807 - 1) ELSE value END FROM json_each('[1, 2]')"
    )
    try:
        with engine.connect() as connection:
            result = connection.exec_driver_sql(overflow_on_second_row)  # the first row is computed: no error yet
            with pytest.raises(sa.exc.OperationalError, match="integer overflow"):
                fetched(result)
            assert fetched(connection.exec_driver_sql("SELECT 1")) == [(1,)]  # the connection goes on
    finally:
        engine.dispose()


def test_writers_take_turns_on_the_lock_file_and_keep_no_descriptor_open(tmp_path: Path) -> None:
    database = tmp_path / "turns.db"
    with ExperimentRunner(database) as runner:
        runner.run("b", [{"seed": seed} for seed in range(20)], odd_fails, show_progress=False, num_parallel=2)
        assert (tmp_path / f"turns.db{LOCK_SUFFIX}").is_file()
        assert lock_files_open(database) == []
        with open(str(database) + LOCK_SUFFIX, "w") as held:  # another runner in the middle of a write
            fcntl.flock(held, fcntl.LOCK_EX)
            batch_id = runner.store.find_batch("b")
            assert batch_id is not None
            waited = []

            def release_soon() -> None:
                time.sleep(0.5)
                waited.append(time.monotonic())
                fcntl.flock(held, fcntl.LOCK_UN)

            releaser = threading.Thread(target=release_soon)
            releaser.start()
            runner.store.requeue(batch_id, "failed")  # waits for its turn
            done_at = time.monotonic()
            releaser.join()
        assert waited and done_at >= waited[0]
        assert statuses(runner)[1] == ("pending", 1)


def test_ctrl_c_stops_a_writer_waiting_for_its_turn_and_leaves_the_lock_file_closed(tmp_path: Path) -> None:
    """A writer waits for its turn in its own thread, so Ctrl-C (SIGINT) interrupts the wait: nothing is written, and
    the lock file is not left open."""
    database = tmp_path / "interrupted.db"
    with ExperimentRunner(database) as runner:
        runner.run("b", [{"seed": seed} for seed in range(6)], odd_fails, show_progress=False)
        batch_id = runner.store.find_batch("b")
        assert batch_id is not None
        with open(str(database) + LOCK_SUFFIX, "w") as held:  # another runner in the middle of a write
            fcntl.flock(held, fcntl.LOCK_EX)
            waiting = threading.Event()

            def interrupt_the_wait() -> None:
                deadline = time.monotonic() + 60
                while len(lock_files_open(database)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)  # until the writer has opened the lock file too: it waits for its turn
                if len(lock_files_open(database)) == 2:
                    waiting.set()
                time.sleep(0.2)
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

            interrupter = threading.Thread(target=interrupt_the_wait, daemon=True)
            interrupter.start()
            with pytest.raises(KeyboardInterrupt):
                runner.store.requeue(batch_id, "failed")
            interrupter.join(timeout=60)
            assert waiting.is_set()
            assert len(lock_files_open(database)) == 1  # this test's own
        assert statuses(runner)[1] == ("failed", 1)


def test_a_child_forked_during_a_write_turn_leaves_the_turn_to_its_parent(tmp_path: Path) -> None:
    """A child forked without exec (a pool an experiment starts) while a thread of its parent writes shares the lock
    file's open file: it closes its copy, so the turn ends when the writer leaves it, not when the child exits."""
    database = tmp_path / "forked.db"
    turns = WriteTurns(sa.make_url(f"sqlite:///{database}"))
    in_turn, leave = threading.Event(), threading.Event()

    def write() -> None:
        with turns.turn():
            in_turn.set()
            leave.wait(60)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert in_turn.wait(60)
        processes.fork_waiting()  # lives until the test ends
        assert lock_state(f"{database}{LOCK_SUFFIX}") == "held"
    finally:
        leave.set()
        writer.join(60)
    assert lock_state(f"{database}{LOCK_SUFFIX}") == "free"


def test_a_child_forked_by_the_writer_in_its_turn_leaves_the_turn_to_it(tmp_path: Path) -> None:
    database = tmp_path / "forked.db"
    turns = WriteTurns(sa.make_url(f"sqlite:///{database}"))
    with turns.turn():
        processes.fork_waiting()  # a pool a hook starts, say: lives until the test ends
        assert lock_state(f"{database}{LOCK_SUFFIX}") == "held"
    assert lock_state(f"{database}{LOCK_SUFFIX}") == "free"


def test_a_lock_file_that_cannot_be_opened_leaves_sqlite_s_locking_alone(tmp_path: Path) -> None:
    database = tmp_path / "no-lock.db"
    (tmp_path / f"no-lock.db{LOCK_SUFFIX}").mkdir()  # opening it for writing fails
    with ExperimentRunner(database) as runner:
        summary = runner.run("b", [{"seed": seed} for seed in range(6)], odd_fails, show_progress=False)
    assert len(summary.completed) == 3 and len(summary.failed) == 3


def test_a_runner_s_claims_are_found_through_the_claim_index(tmp_path: Path) -> None:
    """Renewing and releasing read only the runs still held, through an index of running runs alone."""
    database = tmp_path / "index.db"
    with ExperimentRunner(database) as runner:
        runner.run("b", [{"seed": 1}], odd_fails, show_progress=False)
    with sqlite3.connect(database) as connection:
        plan = connection.execute(
            "EXPLAIN QUERY PLAN UPDATE runs SET lease_expires_at = NULL WHERE claim_token = 'x' AND status = 'running'"
        ).fetchall()
    assert "ix_runs_running_claim_token (claim_token=?)" in " ".join(str(step) for step in plan)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 27, 21, 5, 0, 123_456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 0, 7),  # naive
    ],
)
def test_the_fast_sqlite_timestamp_is_the_text_sqlalchemy_stores(moment: datetime) -> None:
    dialect = sqlite.dialect()
    reference = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert reference is not None
    assert sqlite_timestamp(moment) == reference(moment)


def test_timestamps_in_a_row_each_get_their_own_text() -> None:
    """The text up to the second is kept between calls: a timestamp in the same second, in the same second of
    another day or year, or the second after, still gets its own."""
    dialect = sqlite.dialect()
    reference = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert reference is not None
    first = datetime(2026, 11, 27, 21, 5, 0, 123_456, tzinfo=UTC)
    moments = [
        first,
        first.replace(microsecond=7),
        first.replace(day=28),
        first.replace(year=2027),
        first + timedelta(seconds=1),
        first.replace(tzinfo=None),
        first,
    ]
    assert [sqlite_timestamp(moment) for moment in moments] == [reference(moment) for moment in moments]


def test_a_runner_that_finds_its_specifications_registered_writes_nothing(tmp_path: Path) -> None:
    """Runners starting together on one batch: the one that read the batch before another registered it catches up
    on what was added, and does not wait for the write lock (held here by a stalled writer) to insert it again."""
    database = tmp_path / "together.db"
    specifications = list(hashed([{"seed": seed} for seed in range(500)]))
    with ExperimentRunner(database) as first, ExperimentRunner(database) as late:
        batch_id = first.store.ensure_batch("b")
        known = late.store.known_runs(batch_id, whole=True)  # read before the batch was registered
        assert known.by_hash == {}
        first.store.register(batch_id, specifications, rerun_all=False)
        with open(str(database) + LOCK_SUFFIX, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            registering = threading.Thread(
                target=late.store.register, args=(batch_id, specifications, False, known), daemon=True
            )
            registering.start()
            registering.join(timeout=60)
            assert not registering.is_alive(), "registering waited for the write lock"
        assert len(known.by_hash) == 500
        assert late.store.count(batch_id) == 500


def test_a_batch_registered_meanwhile_is_read_again_and_new_specifications_are_inserted(database_url: str) -> None:
    """A read of the batch that went stale before the write (another runner added runs) is caught up with, and only
    the specifications still missing are inserted."""
    with ExperimentRunner(database_url) as first, ExperimentRunner(database_url) as late:
        batch_id = first.store.ensure_batch("b")
        known = late.store.known_runs(batch_id, whole=True)
        first.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(10)])), rerun_all=False)
        late.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(15)])), False, known)
        assert late.store.count(batch_id) == 15
        summary = late.run("b", [{"seed": seed} for seed in range(15)], odd_fails, show_progress=False)
    assert len(summary.completed) == 8 and len(summary.failed) == 7


def printing_odd_fails(specification: dict[str, int]) -> dict[str, int]:
    print("seed", specification["seed"], "in", os.getpid())
    return odd_fails(specification)


def test_workers_store_their_outcomes_and_the_hooks_still_get_every_result(tmp_path: Path) -> None:
    database = tmp_path / "workers.db"
    results: list[dict[str, int]] = []
    with ExperimentRunner(database) as runner:
        runner.on_specification_complete(lambda specification, result: results.append(result))
        summary = runner.run(
            "b", [{"seed": seed} for seed in range(40)], printing_odd_fails, show_progress=False, num_parallel=2
        )
        stored = statuses(runner)
        with runner.engine.connect() as connection:
            rows = connection.execute(sa.select(runs.c.specification, runs.c.result_json, runs.c.output)).all()
    assert sorted(result["seed"] for result in results) == list(range(0, 40, 2))
    assert len(summary.completed) == 20 and len(summary.failed) == 20
    assert stored == {seed: ("completed" if seed % 2 == 0 else "failed", 1) for seed in range(40)}
    for specification, result_json, output in rows:
        assert output.startswith(f"seed {specification['seed']} in ")
        assert int(output.split()[-1]) != os.getpid()  # ran in a worker
        assert result_json == ({"seed": specification["seed"]} if specification["seed"] % 2 == 0 else None)


def fails_to_store_in_the_worker(specification: dict[str, int]) -> dict[str, int]:
    """Breaks this worker's way to the database (as a database gone from the worker's host would), then runs."""

    def unreachable(database: object) -> None:
        raise RuntimeError("the database cannot be reached from this worker")

    worker_writes.store_for = unreachable  # type: ignore[assignment]
    return odd_fails(specification)


def test_outcomes_a_worker_cannot_store_are_stored_by_the_calling_process(tmp_path: Path) -> None:
    try:
        with ExperimentRunner(tmp_path / "fallback.db") as runner:
            summary = runner.run(
                "b",
                [{"seed": seed} for seed in range(12)],
                fails_to_store_in_the_worker,
                show_progress=False,
                num_parallel=2,
            )
            stored = statuses(runner)
    finally:  # the broken workers go: joblib would hand them to the next test, whose checkpoints they could not save
        get_reusable_executor().shutdown(wait=True)
    assert len(summary.completed) == 6 and len(summary.failed) == 6
    assert stored == {seed: ("completed" if seed % 2 == 0 else "failed", 1) for seed in range(12)}


def slow_odd_fails(specification: dict[str, int]) -> dict[str, int]:
    time.sleep(0.002)
    return odd_fails(specification)


def claimed_runs(path: Path, count: int) -> tuple[ExperimentRunner, LinkOf, list[tuple[int, Specification]]]:
    """A runner whose batch holds runs for seeds 0…count-1, all claimed, and the link a worker runs them with."""
    runner = ExperimentRunner(path)
    batch_id = runner.store.ensure_batch("b")
    runner.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(count)])), rerun_all=False)
    owner = Owner(lease_seconds=600)
    return runner, functools.partial(RunLink, runner.url, token=owner.token), runner.store.claim(batch_id, owner, count)


def test_a_worker_hands_back_the_completed_runs_it_stored_by_id_and_the_failures_as_light_outcomes(
    tmp_path: Path,
) -> None:
    runner, link, claimed = claimed_runs(tmp_path / "chunk.db", 6)
    with runner:
        report = execute_chunk(slow_odd_fails, link, claimed, store_here=True, keep_results=False)
        stored = statuses(runner)
    assert report.stored.run_ids == [run_id for run_id, specification in claimed if specification["seed"] % 2 == 0]
    odd = [run_id for run_id, specification in claimed if specification["seed"] % 2]
    assert [outcome.run_id for outcome in report.outcomes] == odd
    for outcome in report.outcomes:
        assert outcome.fate is Fate.STORED and outcome.error_type == "ValueError"
        assert outcome.output is None and outcome.result_pickle is None
    assert report.runs == 6 and 6 * 0.002 <= report.seconds < 60
    assert stored == {seed: ("completed" if seed % 2 == 0 else "failed", 1) for seed in range(6)}


def test_a_worker_hands_back_whole_outcomes_when_a_hook_needs_the_results_or_it_does_not_store(
    tmp_path: Path,
) -> None:
    runner, link, claimed = claimed_runs(tmp_path / "chunk.db", 4)
    with runner:
        for_a_hook = execute_chunk(odd_fails, link, claimed[:2], store_here=True, keep_results=True)
        not_stored = execute_chunk(odd_fails, link, claimed[2:], store_here=False, keep_results=False)
        stored = statuses(runner)
    assert for_a_hook.stored.run_ids == [] and not_stored.stored.run_ids == []
    assert [outcome.fate for outcome in for_a_hook.outcomes] == [Fate.STORED, Fate.STORED]
    assert pickle.loads(for_a_hook.outcomes[0].result_pickle or b"") == {"seed": 0}
    assert [(outcome.fate, outcome.failed) for outcome in not_stored.outcomes] == [(None, False), (None, True)]
    assert not_stored.outcomes[0].result_json is not None  # whole: the calling process stores it
    assert stored == {0: ("completed", 1), 1: ("failed", 1), 2: ("running", 1), 3: ("running", 1)}


def test_runs_workers_stored_by_id_count_in_the_summary_and_replace_an_earlier_verdict() -> None:
    tally = Tally(completed_at_registration=[])
    failed = Outcome(7, utc_now(), utc_now(), error_type="ValueError", exception=ValueError("first try"))
    failed.specification = {"seed": 7}
    tally.add(Verdict(failed, Fate.STORED))
    tally.add_completed([(7, {"seed": 7}), (8, {"seed": 8})])
    summary = tally.summary()
    assert (tally.completed, tally.failed) == (2, 0)
    assert summary.completed == [{"seed": 7}, {"seed": 8}] and summary.failed == [] and summary.exceptions == []


def test_a_parallel_batch_of_short_runs_reports_what_workers_stored_by_id(
    tmp_path: Path, handed_back_by_id: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    with ExperimentRunner(tmp_path / "ids.db") as runner:
        specifications = [{"seed": seed} for seed in range(400)]
        runner.on_specification_failure(None)
        summary = runner.run("b", specifications, odd_fails, num_parallel=2, show_progress=True)
        stored = statuses(runner)
    progress = capsys.readouterr().err
    assert "400/400" in progress and "completed=200 failed=200" in progress
    # by id: completed runs of the chunks after the first ones (before the pace says runs are short), each once
    assert 0 < len(handed_back_by_id) == len(set(handed_back_by_id)) <= 200
    assert sorted(specification["seed"] for specification in summary.completed) == list(range(0, 400, 2))
    assert sorted(specification["seed"] for specification in summary.failed) == list(range(1, 400, 2))
    assert stored == {seed: ("completed" if seed % 2 == 0 else "failed", 1) for seed in range(400)}


def test_a_call_with_nothing_left_to_run_takes_no_write_turn(tmp_path: Path) -> None:
    """Runners sharing a file wait for each other's write turns: a call whose batch is already done (the batch
    found, the list read, no pending run to claim, no abandoned run to reclaim, no claim to release) takes none,
    and so finishes while another writer holds the lock file."""
    database = tmp_path / "done.db"
    specifications = [{"seed": seed} for seed in range(50)]
    with ExperimentRunner(database) as runner:
        runner.run("b", specifications, square, show_progress=False)
        with open(str(database) + LOCK_SUFFIX, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            summaries: list[Any] = []
            call = threading.Thread(
                target=lambda: summaries.append(runner.run("b", specifications, square, show_progress=False)),
                daemon=True,
            )
            call.start()
            call.join(timeout=60)
            assert not call.is_alive(), "a call with nothing to run waited for the write lock"
    assert summaries[0].skipped == 50 and summaries[0].completed == []


class Linked:
    """An object that can be part of a reference cycle and be watched through a weak reference."""

    partner: Linked | None = None


def test_objects_alive_when_a_batch_starts_are_left_out_of_collection_and_put_back_after(sqlite_path: str) -> None:
    """Inside the block, a reference cycle made before it is not collected (no pass walks it); after the block it is.
    A batch's run leaves nothing frozen behind."""
    assert gc.get_freeze_count() == 0
    first, second = Linked(), Linked()
    first.partner, second.partner = second, first
    watched = weakref.ref(first)
    with heap.frozen():
        assert gc.get_freeze_count() > 0
        del first, second
        gc.collect()
        assert watched() is not None  # frozen: no pass walks the cycle
        with heap.frozen():  # a nested block (a batch run from a hook) ends without thawing the outer one
            pass
        gc.collect()
        assert gc.get_freeze_count() > 0 and watched() is not None
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert watched() is None
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("b", [{"seed": seed} for seed in range(3)], square, show_progress=False)
    assert gc.get_freeze_count() == 0


def test_objects_a_program_froze_itself_stay_frozen(sqlite_path: str) -> None:
    """A program that froze its objects (before forking workers, say) finds them frozen after a batch."""
    first, second = Linked(), Linked()
    first.partner, second.partner = second, first
    watched = weakref.ref(first)
    gc.freeze()
    try:
        del first, second
        with ExperimentRunner(sqlite_path) as runner:
            runner.run("b", [{"seed": seed} for seed in range(3)], square, show_progress=False)
        with heap.frozen():
            pass
        gc.collect()
        assert gc.get_freeze_count() > 0 and watched() is not None  # still frozen: the cycle was not walked
    finally:
        gc.unfreeze()
    gc.collect()
    assert watched() is None
