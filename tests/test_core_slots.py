"""Core slots: a serial runner whose runs are short claims only while it holds a slot of one of the cores it may run
on, waits while other processes hold them all, stops waiting once its batch makes no progress, and lets go of its
slot at the end or once its runs prove longer; longer runs, and PostgreSQL, take none. The other runners here are
real processes holding the real locks of ``<database>-cores``."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import processes
import pytest
from file_locks import lock_state
from sqlalchemy.engine import make_url

from smallab_db import ExperimentRunner
from smallab_db.claims import CLAIM_GROWTH
from smallab_db.core_slots import CORES_SUFFIX, LOOK_SECONDS, CoreSlots, core_slots

RAMP_RUNS = 1 + CLAIM_GROWTH + CLAIM_GROWTH * (1 + CLAIM_GROWTH)  # a runner's first three chunks: 1, 8 and 72 runs

HOLD_EVERY_SLOT = """
import fcntl, os, sys
held = []
for core in os.sched_getaffinity(0):
    held.append(os.open(os.path.join(sys.argv[1], str(core)), os.O_RDWR | os.O_CREAT))
    fcntl.flock(held[-1], fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until killed
"""

RUNNER_ON_ONE_CORE = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core here: one core slot
from smallab_db import ExperimentRunner

def trivial(specification):
    return {"x": specification["seed"]}

runner = ExperimentRunner(sys.argv[1])
specifications = [{"seed": seed} for seed in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.readline()
summary = runner.run("shared", specifications, trivial, show_progress=False)
runner.close()
print(len(summary.completed), flush=True)
"""


def trivial(specification: dict[str, int]) -> dict[str, int]:
    return {"x": specification["seed"]}


def two_milliseconds(specification: dict[str, int]) -> dict[str, int]:
    time.sleep(0.002)
    return {"x": specification["seed"]}


def hold_every_slot(database: Path) -> subprocess.Popen[str]:
    """A process holding every core slot of ``database``, as other runners would, until killed."""
    folder = Path(f"{database}{CORES_SUFFIX}")
    folder.mkdir(exist_ok=True)
    child = processes.spawn(
        [sys.executable, "-c", HOLD_EVERY_SLOT, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def first_slot(database: Path) -> str:
    """Whether the slot of the first core is "held" (by any open file: one of this process too) or "free"."""
    return lock_state(Path(f"{database}{CORES_SUFFIX}") / str(min(os.sched_getaffinity(0))))


def run_times(database: Path) -> list[tuple[datetime, datetime]]:
    """``(started_at, finished_at)`` of each completed run, in the order they started."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT started_at, finished_at FROM runs WHERE status = 'completed' ORDER BY started_at"
        ).fetchall()
    return [(datetime.fromisoformat(started), datetime.fromisoformat(finished)) for started, finished in rows]


def waits_between_runs(database: Path) -> list[float]:
    """The seconds from each completed run's end to the next one's start."""
    times = run_times(database)
    return [(later[0] - earlier[1]).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]


def attempts(database: Path) -> list[int]:
    """The attempts of each completed run."""
    with sqlite3.connect(database) as connection:
        return [count for (count,) in connection.execute("SELECT attempts FROM runs WHERE status = 'completed'")]


@pytest.fixture
def beside_a_holder(tmp_path: Path) -> Iterator[tuple[Path, ExperimentRunner]]:
    """A database whose every core slot another process holds, running nothing, and a runner on it."""
    database = tmp_path / "slots.db"
    runner = ExperimentRunner(database)
    hold_every_slot(database)  # killed when the test ends
    yield database, runner
    runner.close()


def test_short_runs_wait_for_a_slot_until_their_batch_stops_moving_then_run_without_one(
    beside_a_holder: tuple[Path, ExperimentRunner],
) -> None:
    database, runner = beside_a_holder
    summary = runner.run("slots", [{"seed": seed} for seed in range(2000)], trivial, show_progress=False)
    assert len(summary.completed) == 2000
    assert attempts(database) == [1] * 2000
    # once its runs proved short, it waited a look for a slot in vain, then went on without one (5 claims here)
    assert sum(wait >= 0.9 * LOOK_SECONDS for wait in waits_between_runs(database)) == 1


def test_longer_runs_take_no_core_slot(beside_a_holder: tuple[Path, ExperimentRunner]) -> None:
    database, runner = beside_a_holder
    summary = runner.run("slots", [{"seed": seed} for seed in range(40)], two_milliseconds, show_progress=False)
    assert len(summary.completed) == 40
    assert max(waits_between_runs(database)) < 0.9 * LOOK_SECONDS  # it never waited a look for a slot


def test_a_runner_holds_its_core_slot_while_it_claims_and_lets_go_at_the_end(tmp_path: Path) -> None:
    database = tmp_path / "slots.db"
    runner = ExperimentRunner(database)
    seen: list[str] = []

    def looks_at_run_500(specification: dict[str, int]) -> dict[str, int]:
        if specification["seed"] == 500:  # executed in the runner's own thread, while it holds its slot
            seen.append(first_slot(database))
        return {"x": specification["seed"]}

    summary = runner.run("slots", [{"seed": seed} for seed in range(1000)], looks_at_run_500, show_progress=False)
    assert len(summary.completed) == 1000
    assert seen == ["held"]
    assert first_slot(database) == "free"
    runner.close()


def test_a_runner_presumes_its_runs_as_short_as_the_batchs_latest(
    beside_a_holder: tuple[Path, ExperimentRunner],
) -> None:
    database, runner = beside_a_holder
    runner.run("slots", [{"seed": seed} for seed in range(100)], two_milliseconds, show_progress=False)
    runner.run("slots", [{"seed": seed} for seed in range(100, 200)], trivial, show_progress=False)
    began = datetime.now(UTC).replace(tzinfo=None)  # as the runs' times are stored: UTC
    summary = runner.run("slots", [{"seed": seed} for seed in range(210)], trivial, show_progress=False)
    assert len(summary.completed) == 10
    first_new_start = run_times(database)[200][0]
    assert (first_new_start - began).total_seconds() >= 0.9 * LOOK_SECONDS  # it waited before its first claim


def test_a_runner_lets_go_of_its_slot_once_its_runs_prove_longer(tmp_path: Path) -> None:
    database = tmp_path / "slots.db"
    runner = ExperimentRunner(database)
    runner.run("slots", [{"seed": seed} for seed in range(100)], trivial, show_progress=False)
    seen: list[str] = []

    def longer_from_100(specification: dict[str, int]) -> dict[str, int]:
        if specification["seed"] in (100, 120):
            seen.append(first_slot(database))
        time.sleep(0.005)
        return {"x": specification["seed"]}

    summary = runner.run("slots", [{"seed": seed} for seed in range(140)], longer_from_100, show_progress=False)
    assert len(summary.completed) == 40
    # presumed short from the batch's runs, it took a slot for its first run, which took 5 ms: it let go of it
    assert seen == ["held", "free"]
    runner.close()


def test_runners_on_one_core_leave_the_batch_to_the_one_holding_its_slot(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER_ON_ONE_CORE)
    children = [
        processes.spawn(
            [sys.executable, str(script), str(database), "1000"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    ran = []
    for child in children:
        assert child.stdout is not None
        ran.append(int(child.stdout.readline()))
        assert child.wait(timeout=120) == 0
    assert sum(ran) == 1000
    assert attempts(database) == [1] * 1000
    assert all(count <= RAMP_RUNS for count in sorted(ran)[:-1])  # the others stopped claiming: their runs are short


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://postgres@127.0.0.1/test", "sqlite://", "sqlite:///file:runs.db?mode=rwc&uri=true"]
)
def test_no_core_slots_without_a_database_file(url: str) -> None:
    assert core_slots(make_url(url)) is None


def test_slots_are_the_cores_this_process_may_run_on(tmp_path: Path) -> None:
    database = tmp_path / "slots.db"
    slots = core_slots(make_url(f"sqlite:///{database}"))
    assert slots is not None and slots.take(lambda: 1)
    assert first_slot(database) == "held"
    assert {path.name for path in (tmp_path / f"slots.db{CORES_SUFFIX}").iterdir()} == {
        str(core) for core in os.sched_getaffinity(0)
    }
    slots.let_go()
    assert first_slot(database) == "free"


def test_two_runners_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    folder = tmp_path / f"slots.db{CORES_SUFFIX}"
    first, second = CoreSlots(folder, [0]), CoreSlots(folder, [0])
    assert first.take(lambda: 1)
    assert not second.take(lambda: 0)  # the one slot is held: it stops waiting, nothing being left
    first.let_go()
    assert second.take(lambda: 1)
    second.let_go()


def test_a_child_forked_while_a_slot_is_held_leaves_the_slot_to_its_parent(tmp_path: Path) -> None:
    """A child forked without exec (a pool an experiment starts) shares the open file that holds the slot: it closes
    its copy, so the slot is free once its runner lets go, not once the child exits."""
    database = tmp_path / "slots.db"
    slots = CoreSlots(Path(f"{database}{CORES_SUFFIX}"), [min(os.sched_getaffinity(0))])
    assert slots.take(lambda: 1)
    processes.fork_waiting()  # lives until the test ends
    assert first_slot(database) == "held"
    slots.let_go()
    assert first_slot(database) == "free"


def test_a_child_forked_while_a_runner_waits_for_a_slot_leaves_it_the_slot_it_then_takes(tmp_path: Path) -> None:
    database = tmp_path / "slots.db"
    folder, core = Path(f"{database}{CORES_SUFFIX}"), min(os.sched_getaffinity(0))
    holder, waiter = CoreSlots(folder, [core]), CoreSlots(folder, [core])
    assert holder.take(lambda: 1)
    waiting = threading.Event()
    looks = itertools.count(1)
    deadline = time.monotonic() + 60

    def left() -> int:  # the batch moves on, for a minute at most: the waiter keeps waiting
        waiting.set()
        return next(looks) if time.monotonic() < deadline else 0

    taken: list[bool] = []
    thread = threading.Thread(target=lambda: taken.append(waiter.take(left)), daemon=True)
    thread.start()
    try:
        assert waiting.wait(60)
        processes.fork_waiting()  # while the waiter has the slot's file open: lives until the test ends
    finally:
        holder.let_go()
        thread.join(60)
    assert taken == [True]
    waiter.let_go()
    assert first_slot(database) == "free"
