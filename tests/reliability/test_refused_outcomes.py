"""No result is lost because one outcome cannot be stored: odd text, a value the database refuses, a dropped
connection. Only the run concerned fails (or, for a dropped connection, none), and the batch goes on."""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from smallab_db import ExperimentRunner, ResultNotStoredError, SpecError
from smallab_db.schema import runs

SEEDS = [{"seed": seed} for seed in range(8)]
UNDECODABLE = b"/data/caf\xe9.csv".decode("utf-8", "surrogateescape")  # a file name that is not UTF-8


def rows_by_seed(runner: ExperimentRunner) -> dict[int, Any]:
    with runner.engine.connect() as connection:
        return {row.specification["seed"]: row for row in connection.execute(sa.select(runs))}


def test_an_error_message_with_a_lone_surrogate_fails_only_its_run(database_url: str) -> None:
    def reads_a_file(specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] == 3:
            raise FileNotFoundError(f"no such file: {UNDECODABLE}")
        return {"seed": specification["seed"]}

    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    summary = runner.run("surrogates", SEEDS, reads_a_file, show_progress=False)
    assert [spec["seed"] for spec in summary.completed] == [0, 1, 2, 4, 5, 6, 7]
    assert summary.failed == [{"seed": 3}] and isinstance(summary.exceptions[0], FileNotFoundError)
    stored = rows_by_seed(runner)
    assert {seed for seed, row in stored.items() if row.status == "completed"} == {0, 1, 2, 4, 5, 6, 7}
    assert stored[3].status == "failed" and stored[3].error_type == "FileNotFoundError"
    assert "caf\\udce9.csv" in stored[3].error_message and "caf\\udce9.csv" in stored[3].traceback
    again = runner.run("surrogates", SEEDS, reads_a_file, show_progress=False)  # the failed run runs again, alone
    assert (again.skipped, len(again.failed)) == (7, 1)


def test_an_exception_whose_message_cannot_be_read_fails_only_its_run(sqlite_path: str) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("broken __str__")

    def raises(specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] == 1:
            raise Unprintable()
        return {}

    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    summary = runner.run("unprintable", SEEDS, raises, show_progress=False)
    assert len(summary.completed) == 7 and summary.failed == [{"seed": 1}]
    assert "could not be read" in rows_by_seed(runner)[1].error_message


def test_a_nul_in_a_result_keeps_the_batch_queryable(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    result = {"text": "a\x00b", "n": 5, "nested": {"k\x00": ["\x00"]}}
    summary = runner.run("nul", SEEDS[:2], lambda spec: {**result, "n": spec["seed"]}, show_progress=False)
    assert len(summary.completed) == 2
    if runner.engine.dialect.name == "postgresql":
        query = "SELECT (result_json->>'n')::int, result_json->>'text' FROM runs ORDER BY id"
    else:
        query = "SELECT json_extract(result_json, '$.n'), json_extract(result_json, '$.text') FROM runs ORDER BY id"
    with runner.engine.connect() as connection:
        assert connection.exec_driver_sql(query).all() == [(0, "a\ufffdb"), (1, "a\ufffdb")]
    assert runner.results("nul")[1]["result"] == {**result, "n": 1}  # the pickle keeps the exact value


@pytest.mark.parametrize(
    "specification",
    [{"path": "a\x00b"}, {"k\x00": 1}, {"list": ["ok", ["\x00"]]}],
    ids=["value", "key", "nested"],
)
def test_a_nul_in_a_specification_is_refused_before_anything_is_written(
    database_url: str, specification: dict[str, Any]
) -> None:
    runner = ExperimentRunner(database_url)
    with pytest.raises(SpecError, match="NUL character"):
        runner.run("nul", [{"seed": 1}, specification], lambda spec: {}, show_progress=False)
    assert runner.store.batch_counts() == []


@pytest.mark.parametrize(("depth", "container"), [(101, "dict"), (990, "dict"), (990, "list"), (5000, "list")])
def test_a_specification_nested_too_deep_is_refused_before_anything_is_written(
    database_url: str, depth: int, container: str
) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"n": nested} if container == "dict" else [nested]
    runner = ExperimentRunner(database_url)
    with pytest.raises(SpecError, match="nested more than 100 levels deep"):
        runner.run("deep", [{"seed": 1}, {"deep": nested}], lambda spec: {}, show_progress=False)
    assert runner.store.batch_counts() == []


def test_a_specification_nested_100_levels_deep_runs(sqlite_path: str) -> None:
    nested: Any = 1
    for _ in range(99):
        nested = {"n": nested}
    runner = ExperimentRunner(sqlite_path)
    summary = runner.run("deep", [{"deep": nested}], lambda spec: {"ok": True}, show_progress=False)
    assert summary.completed == [{"deep": nested}]


def test_a_result_postgresql_refuses_fails_only_its_run(postgres_url: str) -> None:
    """A real refusal by the server (a size limit, as a CHECK constraint in this test's own database): the other
    results of the same group are kept and the batch goes on."""
    runner = ExperimentRunner(postgres_url)
    with runner.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE runs ADD CONSTRAINT small_results CHECK (length(result) < 10000)")
    runner.on_specification_failure(None)
    big_for_5 = lambda spec: {"blob": "x" * (50_000 if spec["seed"] == 5 else 10)}  # noqa: E731
    summary = runner.run("limits", SEEDS, big_for_5, show_progress=False)
    assert [spec["seed"] for spec in summary.completed] == [0, 1, 2, 3, 4, 6, 7]
    assert summary.failed == [{"seed": 5}] and isinstance(summary.exceptions[0], ResultNotStoredError)
    stored = rows_by_seed(runner)
    assert stored[5].status == "failed" and "small_results" in stored[5].error_message
    assert all(pickle.loads(stored[seed].result) == {"blob": "x" * 10} for seed in (0, 1, 2, 3, 4, 6, 7))


def test_two_specifications_equal_in_python_are_reported_apart(sqlite_path: str) -> None:
    """``{"x": True} == {"x": 1}`` in Python, but they are two runs: the summary follows run ids. One of them has
    its result refused (SQLite's own length limit, lowered on this engine)."""
    runner = ExperimentRunner(sqlite_path)
    runner.engine.dispose()
    sa.event.listen(
        runner.engine, "connect", lambda connection, _: connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)
    )
    runner.on_specification_failure(None)
    specifications = [{"x": True}, {"x": 1}]
    big_when_int = lambda spec: {"blob": "x" * (500_000 if type(spec["x"]) is int else 1)}  # noqa: E731
    summary = runner.run("twins", specifications, big_when_int, show_progress=False)
    assert len(summary.completed) == len(summary.failed) == 1
    assert summary.completed[0]["x"] is True and summary.failed[0]["x"] == 1 and summary.failed[0]["x"] is not True


def waiting_for_a_lock(admin: Any, database: str) -> list[int]:
    """The pids of the sessions of ``database`` that wait for a lock."""
    query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
    return [pid for (pid,) in admin.execute(query, (database,))]


def test_a_dropped_connection_is_retried_and_no_result_is_lost(postgres_url: str) -> None:
    """The connection storing a group is terminated (``pg_terminate_backend``, as a server restart does) while it
    writes, twice in a row: the runner reconnects and stores the group; no run is marked failed."""
    psycopg = pytest.importorskip("psycopg")
    database = sa.make_url(postgres_url).database
    plain_url = postgres_url.replace("+psycopg", "")
    terminated: list[int] = []
    blocker = psycopg.connect(plain_url)

    def cut_in_twice() -> None:
        """Wait for the session that stores run 3 to block on its row, terminate it; again; then let go."""
        with psycopg.connect(plain_url, autocommit=True) as admin:
            for _ in range(2):
                deadline = time.monotonic() + 60
                while not (waiting := waiting_for_a_lock(admin, database)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                for pid in waiting:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    terminated.append(pid)
                while set(waiting) & set(waiting_for_a_lock(admin, database)):
                    time.sleep(0.01)
        blocker.rollback()

    cutter = threading.Thread(target=cut_in_twice, daemon=True)

    def experiment(specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] == 3:  # before returning, hold this run's row so that storing it must wait
            blocker.execute("SELECT 1 FROM runs WHERE (specification->>'seed')::int = 3 FOR UPDATE")
            cutter.start()
        return {"seed": specification["seed"]}

    try:
        runner = ExperimentRunner(postgres_url)
        summary = runner.run("dropped", SEEDS, experiment, show_progress=False)
        cutter.join(timeout=120)
    finally:
        blocker.close()
    assert len(terminated) >= 2, "the session storing run 3 was not caught waiting twice"
    assert (len(summary.completed), summary.failed, summary.not_stored) == (8, [], [])
    assert {row.status for row in rows_by_seed(runner).values()} == {"completed"}
