"""Checkpointed and overlapping-output smallab 2.x experiments, in one process: when checkpoints are taken, what a
re-run resumes from, dill where pickle cannot, a clear failure where neither can, progress and outputs stored as
the run goes. (Real kills, lost claims and two runners: tests/reliability/test_checkpoint_resume.py.)"""

from __future__ import annotations

import logging
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import dill
import pytest
import sqlalchemy as sa
from smallab2_workloads import Counting, HoldsGenerator, Producing, steps_run

from smallab_db import ExperimentRunner
from smallab_db.experiment_types.overlapping_output_experiment import OverlappingOutputCheckpointedExperiment
from smallab_db.runner_implementations.main_process_runner import MainRunner
from smallab_db.runner_implementations.multiprocessing_runner import MultiprocessingRunner
from smallab_db.schema import checkpoints, runs


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


def states(runner: ExperimentRunner) -> list[Any]:
    with runner.engine.connect() as connection:
        query = sa.select(checkpoints.c.state).order_by(checkpoints.c.id)
        return [dill.loads(state) for state in connection.execute(query).scalars()]


def run_row(runner: ExperimentRunner) -> Any:
    with runner.engine.connect() as connection:
        return connection.execute(sa.select(runs)).one()


class EveryThird(Counting):
    def steps_before_checkpoint(self) -> int:
        return 3


def test_checkpoints_come_every_steps_before_checkpoint_steps(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    (markers / "fail-0").touch()
    specification = {"seed": 0, "steps": 10, "fail_at": 9}
    runner.run("cadence", [specification], EveryThird(str(markers)), specification_runner=MainRunner(False))
    # as in 2.x, initialize counts as a step towards the first checkpoint
    assert [state.count for state in states(runner)] == [2, 5, 8]


@pytest.mark.parametrize("specification_runner", [MainRunner(False), MultiprocessingRunner(2)], ids=["serial", "pool"])
def test_a_failed_run_keeps_its_newest_checkpoints_and_a_rerun_resumes_from_the_newest(
    database_url: str, markers: Path, specification_runner: Any
) -> None:
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    specification = {"seed": 0, "steps": 10, "fail_at": 9}
    (markers / "fail-0").touch()
    summary = runner.run("resumed", [specification], Counting(str(markers)), specification_runner=specification_runner)
    assert len(summary.failed) == 1
    assert [state.count for state in states(runner)] == [6, 7, 8]  # of the 9 checkpoints, the 3 newest
    failed = run_row(runner)
    assert (failed.status, failed.progress, failed.progress_total) == ("failed", 8, 10)

    summary = runner.run("resumed", [specification], Counting(str(markers)), specification_runner=specification_runner)
    assert len(summary.completed) == 1
    assert [count for count, _ in steps_run(markers, 0)] == [*range(1, 10), 9, 10]
    assert states(runner) == []
    assert pickle.loads(run_row(runner).result) == {"count": 10, "seed": 0}


def test_a_checkpoint_that_no_longer_loads_is_skipped_for_the_next_newest(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specification = {"seed": 0, "steps": 6, "fail_at": 5}
    (markers / "fail-0").touch()
    runner.run("damaged", [specification], Counting(str(markers)), specification_runner=MainRunner(False))
    with sqlite3.connect(sqlite_path) as connection:
        newest = connection.execute("SELECT max(id) FROM checkpoints").fetchone()[0]
        connection.execute("UPDATE checkpoints SET state = ? WHERE id = ?", (b"\x80\x04truncated", newest))
    runner.run("damaged", [specification], Counting(str(markers)), specification_runner=MainRunner(False))
    assert [count for count, _ in steps_run(markers, 0)] == [1, 2, 3, 4, 5, 4, 5, 6]
    output = run_row(runner).output
    assert "checkpoint 0 (newest is 0) cannot be loaded (UnpicklingError" in output
    assert "resuming from checkpoint 1 (newest is 0)" in output


class WithLambda(Counting):
    def initialize(self, specification: dict[str, Any]) -> None:
        super().initialize(specification)
        self.double = lambda number: 2 * number

    def step(self) -> Any:
        returned = super().step()
        return {"double": self.double(returned["count"])} if isinstance(returned, dict) else returned


def test_state_pickle_cannot_save_is_saved_with_dill_and_resumed(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specification = {"seed": 0, "steps": 4, "fail_at": 3}
    (markers / "fail-0").touch()
    runner.run("dill", [specification], WithLambda(str(markers)), specification_runner=MainRunner(False))
    with runner.engine.connect() as connection:
        saved = connection.execute(sa.select(checkpoints.c.state)).scalars().all()
    assert saved and all(b"dill._dill" in state for state in saved)  # plain pickle refuses the lambda
    runner.run("dill", [specification], WithLambda(str(markers)), specification_runner=MainRunner(False))
    assert runner.results("dill") == [{"specification": specification, "result": {"double": 8}}]
    assert [count for count, _ in steps_run(markers, 0)] == [1, 2, 3, 3, 4]


def test_an_experiment_that_cannot_be_checkpointed_fails_its_run_clearly(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    summary = runner.run("stuck", [{"seed": 0}], HoldsGenerator(), specification_runner=MainRunner(False))
    (error,) = summary.exceptions
    message = str(error)
    assert message.startswith("the experiment cannot be checkpointed: HoldsGenerator cannot be pickled, even with dill")
    assert "self.numbers (generator: TypeError: cannot pickle 'generator' object)" in message
    assert "keep only picklable state on self" in message
    assert run_row(runner).error_type == "smallab_db.errors.ExperimentError"


def test_outputs_are_completed_runs_as_soon_as_produced(database_url: str, markers: Path) -> None:
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    given = {"seed": 3, "outputs": [2, 4, 6], "fail_at": 5}
    summary = runner.run("produced", [given], Producing(), specification_runner=MainRunner(False))
    assert summary.failed == [given]  # failed after producing two outputs, which are stored already
    completed = {tuple(run["specification"].items()): run["result"] for run in runner.results("produced")}
    assert completed == {
        (("iterations", 2), ("seed", 3)): {"total": 6},
        (("iterations", 4), ("seed", 3)): {"total": 12},
    }

    del given["fail_at"]
    runner.run("produced", [given], Producing(), specification_runner=MainRunner(False))
    records = {str(run["specification"]): run["result"] for run in runner.results("produced")}
    assert records == {
        str({"iterations": 2, "seed": 3}): {"total": 6},
        str({"iterations": 4, "seed": 3}): {"total": 12},
        str({"iterations": 6, "seed": 3}): {"total": 18},
        str(given): [],  # the given specification is done, as 2.x marked it
    }
    with runner.engine.connect() as connection:
        produced = connection.execute(sa.select(runs.c.progress, runs.c.progress_total).where(runs.c.id == 2)).one()
    assert tuple(produced) == (None, None)


class BadOutput(OverlappingOutputCheckpointedExperiment):
    def initialize(self, specification: dict[str, Any]) -> None:
        pass

    def step(self) -> Any:
        return "not an output"


def test_an_overlapping_step_returning_something_else_fails_clearly(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    (error,) = runner.run("bad", [{"seed": 1}], BadOutput(), specification_runner=MainRunner(False)).exceptions
    assert "must return an OverlappingOutputCheckpointedExperimentReturnValue" in str(error)


class NamesItsFolder(Counting):
    def step(self) -> Any:
        logging.getLogger(self.get_logger_name()).info("folder %s", self.get_logging_folder())
        return super().step()


def test_a_resumed_run_logs_to_this_call_s_folder(sqlite_path: str, markers: Path) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    specification = {"seed": 0, "steps": 3, "fail_at": 2}
    (markers / "fail-0").touch()
    runner.run("moved", [specification], NamesItsFolder(str(markers)), specification_runner=MainRunner(False))
    runner.run("moved", [specification], NamesItsFolder(str(markers)), specification_runner=MainRunner(False))
    calls = sorted(Path("experiment_runs/moved/logs").iterdir())
    assert len(calls) == 2
    assert f"folder {calls[1]}" in (calls[1] / "seed-0_steps-3_fail_at-2.log").read_text()
