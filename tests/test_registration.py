"""Registering a list the batch already holds reads the batch instead of hashing the list; any change of the batch's
runs makes it hash again; runners given one list together wait for the one registering it, and take its turn over
when it is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import processes
import pytest
import sqlalchemy as sa
from runner_processes import rows, statuses

from smallab_db import ExperimentRunner, specification
from smallab_db.records import ImportedRun
from smallab_db.schema import registrations, runs
from smallab_db.store import RunStore

COUNT = 200
SPECIFICATIONS = [{"seed": seed} for seed in range(COUNT)]


def odd_fails(spec: dict[str, int]) -> dict[str, int]:
    if spec["seed"] % 2:
        raise ValueError(f"odd seed {spec['seed']}")
    return {"seed": spec["seed"]}


def trivial(spec: dict[str, int]) -> dict[str, int]:
    return {"x": spec["seed"]}


@pytest.fixture
def hashings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the specifications hashed for registering, from here on."""
    counted: list[int] = []
    original = specification.hashed

    def counting(specifications: list[Any], keep_key_order: bool = False) -> Iterator[tuple[str, str]]:
        counted.append(len(specifications))
        return original(specifications, keep_key_order)

    monkeypatch.setattr(specification, "hashed", counting)
    return counted


def attempts_by_seed(database: str) -> dict[int, tuple[str, int]]:
    return {seed: (status, attempts) for seed, (status, attempts, _) in statuses(database).items()}


def registration_row(runner: ExperimentRunner) -> dict[str, Any]:
    with runner.engine.connect() as connection:
        return dict(connection.execute(sa.select(registrations)).mappings().one())


def test_a_list_registered_before_is_read_not_hashed_and_its_failures_run_again(
    database_url: str, hashings: list[int]
) -> None:
    with ExperimentRunner(database_url) as runner:
        first = runner.run("b", SPECIFICATIONS, odd_fails, show_progress=False)
        assert hashings == [COUNT] and len(first.failed) == COUNT // 2
        assert registration_row(runner)["listed_count"] == COUNT
        second = runner.run("b", [dict(spec) for spec in SPECIFICATIONS], odd_fails, show_progress=False)
        assert hashings == [COUNT]  # an equal list, made again: not hashed
        assert second.skipped == COUNT // 2 and not second.completed
        assert sorted(spec["seed"] for spec in second.failed) == list(range(1, COUNT, 2))
        again = runner.run("b", SPECIFICATIONS, odd_fails, show_progress=False, continue_from_last_run=False)
        assert hashings == [COUNT] and again.skipped == 0 and len(again.completed) == COUNT // 2
        stored = attempts_by_seed(database_url)
        row = registration_row(runner)
    assert stored == {seed: ("completed", 2) if seed % 2 == 0 else ("failed", 3) for seed in range(COUNT)}
    assert row["registering_token"] is None and row["registering_digest"] is None


def test_the_same_specifications_in_another_order_or_key_order_are_hashed_again(
    sqlite_path: str, hashings: list[int]
) -> None:
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("b", [{"seed": seed, "k": 1} for seed in range(5)], trivial, show_progress=False)
        runner.run("b", [{"k": 1, "seed": seed} for seed in range(5)], trivial, show_progress=False)
        reordered = runner.run(
            "b", [{"seed": seed, "k": 1} for seed in reversed(range(5))], trivial, show_progress=False
        )
        assert hashings == [5, 5, 5] and reordered.skipped == 5
        assert len(attempts_by_seed(sqlite_path)) == 5


def test_deleted_runs_make_the_list_be_hashed_again_and_run(database_url: str, hashings: list[int]) -> None:
    """Deleting through smallab-db forgets the list; a count that no longer matches (runs deleted with hand-written
    SQL) does too."""
    with ExperimentRunner(database_url) as runner:
        runner.run("b", SPECIFICATIONS, trivial, show_progress=False)
        batch_id = runner.store.find_batch("b")
        assert batch_id is not None
        with runner.engine.begin() as connection:
            connection.execute(sa.delete(runs).where(runs.c.specification["seed"].as_integer() < 3))
        by_sql = runner.run("b", SPECIFICATIONS, trivial, show_progress=False)
        assert sorted(spec["seed"] for spec in by_sql.completed) == [0, 1, 2]
        assert runner.store.delete_runs(batch_id, "completed", run_id=None) == COUNT
        assert registration_row(runner)["listed_digest"] is None
        by_store = runner.run("b", SPECIFICATIONS, trivial, show_progress=False)
        assert len(by_store.completed) == COUNT
        assert hashings == [COUNT, COUNT, COUNT]
        assert attempts_by_seed(database_url) == {seed: ("completed", 1) for seed in range(COUNT)}


def test_runs_added_by_another_list_or_an_import_make_the_first_list_be_hashed_again(
    database_url: str, hashings: list[int]
) -> None:
    with ExperimentRunner(database_url) as runner:
        runner.run("b", SPECIFICATIONS[:10], trivial, show_progress=False)
        runner.run("b", SPECIFICATIONS[5:15], trivial, show_progress=False)
        assert registration_row(runner)["listed_digest"] is None  # the batch holds more than the second list
        again = runner.run("b", SPECIFICATIONS[:10], trivial, show_progress=False)
        assert again.skipped == 10 and hashings == [10, 10, 10]
        batch_id = runner.store.find_batch("b")
        assert batch_id is not None
        runner.run("c", SPECIFICATIONS[:3], trivial, show_progress=False)
        runner.run("c", SPECIFICATIONS[:3], trivial, show_progress=False)
        assert hashings == [10, 10, 10, 3]
        canonical = '{"seed":99}'
        imported = ImportedRun(specification.hash_canonical(canonical), canonical, b"", None)
        c_id = runner.store.find_batch("c")
        assert c_id is not None and runner.store.import_completed(c_id, [imported]) == 1
        assert runner.run("c", SPECIFICATIONS[:3], trivial, show_progress=False).skipped == 3
        assert hashings == [10, 10, 10, 3, 3]


def test_the_runner_creating_a_batch_takes_the_turn_to_register_in_the_same_write(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runners started together on a new batch wait for each other's writes: the one that creates the batch takes the
    turn to register as it does, with no write of its own between the two, and ends the turn once registered."""
    writes: list[str] = []
    original = RunStore._write

    def counted(self: RunStore, transaction: Callable[[Any], Any], what: str) -> Any:
        writes.append(what)
        return original(self, transaction, what)

    monkeypatch.setattr(RunStore, "_write", counted)
    with ExperimentRunner(database_url) as runner:
        writes.clear()
        runner.run("b", SPECIFICATIONS, trivial, show_progress=False)
        assert writes[: writes.index("registering specifications")] == ["creating batch 'b'"]
        row = registration_row(runner)
    assert row["registering_token"] is None and row["listed_count"] == COUNT
    assert row["listed_digest"] == specification.list_digest(SPECIFICATIONS)


def test_a_registration_that_fails_gives_its_turn_back(sqlite_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(specifications: list[Any], keep_key_order: bool = False) -> Iterator[tuple[str, str]]:
        raise RuntimeError("hashing broke")

    with ExperimentRunner(sqlite_path) as runner:
        monkeypatch.setattr(specification, "hashed", broken)
        with pytest.raises(RuntimeError, match="hashing broke"):
            runner.run("b", SPECIFICATIONS, trivial, show_progress=False)
        row = registration_row(runner)
        assert row["registering_token"] is None and row["listed_digest"] is None
        monkeypatch.undo()
        assert len(runner.run("b", SPECIFICATIONS, trivial, show_progress=False).completed) == COUNT


# A runner whose registration stops before hashing, until told to go on by a line on its standard input.
HOLDER = f"""
import sys
from smallab_db import ExperimentRunner, specification

original = specification.hashed

def hashed_when_told(*arguments, **keywords):
    print("registering", flush=True)
    sys.stdin.readline()
    return original(*arguments, **keywords)

def trivial(spec):
    return {{"x": spec["seed"]}}

specification.hashed = hashed_when_told
with ExperimentRunner(sys.argv[1], lease_seconds=float(sys.argv[2])) as runner:
    summary = runner.run("b", [{{"seed": seed}} for seed in range({COUNT})], trivial, show_progress=False)
print(len(summary.completed), flush=True)
"""


def start_holder(database: str, lease_seconds: float, tmp_path: Path, **options: Any) -> subprocess.Popen[str]:
    """Start a runner that takes the turn to register and waits; return it once it holds the turn."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = processes.spawn(
        [sys.executable, str(script), database, str(lease_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **options,
    )
    assert holder.stdout.readline().strip() == "registering"
    return holder


def run_in_thread(database: str, results: list[Any]) -> threading.Thread:
    def run() -> None:
        with ExperimentRunner(database) as runner:
            results.append(runner.run("b", SPECIFICATIONS, trivial, show_progress=False))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_count(database: str) -> int:
    return int(rows(database, sa.select(sa.func.count()).select_from(runs))[0][0])


def test_a_runner_given_the_list_being_registered_waits_and_does_not_hash_it(
    database_url: str, tmp_path: Path, hashings: list[int]
) -> None:
    holder = start_holder(database_url, 600, tmp_path)
    results: list[Any] = []
    waiter = run_in_thread(database_url, results)
    waiter.join(1.0)
    assert waiter.is_alive() and run_count(database_url) == 0  # waiting, not registering the list itself
    holder.stdin.write("go\n")
    holder.stdin.flush()
    waiter.join(120)
    assert not waiter.is_alive()
    held_ran = int(holder.stdout.readline())
    assert held_ran + len(results[0].completed) == COUNT
    assert hashings == []  # the waiter read the list the holder registered
    assert attempts_by_seed(database_url) == {seed: ("completed", 1) for seed in range(COUNT)}


def test_the_turn_of_a_runner_killed_on_this_machine_is_taken_over_at_once(database_url: str, tmp_path: Path) -> None:
    holder = start_holder(database_url, 600, tmp_path)  # a lease far longer than the wait below
    processes.kill_group(holder)
    holder.wait(30)
    results: list[Any] = []
    run_in_thread(database_url, results).join(120)
    assert len(results[0].completed) == COUNT


def test_the_turn_of_a_runner_on_another_machine_is_taken_over_when_its_lease_ends(
    database_url: str, tmp_path: Path
) -> None:
    environment = {**os.environ, "SMALLAB_DB_SIMULATED_HOST": "elsewhere"}
    holder = start_holder(database_url, 2, tmp_path, env=environment)
    processes.kill_group(holder)
    holder.wait(30)
    results: list[Any] = []
    waiter = run_in_thread(database_url, results)
    waiter.join(120)
    assert not waiter.is_alive() and len(results[0].completed) == COUNT
