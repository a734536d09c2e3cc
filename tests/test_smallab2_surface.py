"""smallab 2.3.1's public surface under ``smallab_db``: its module paths and names, ``run()``'s 2.x keywords with 2.x's
meaning, callbacks, tuples in specifications, logger names and folders; and today's API unchanged beside it."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import processes
import pytest
from smallab2_workloads import WhereItRan
from test_email_hooks import smtp_server  # noqa: F401  (a fixture)
from workloads import Square

import smallab_db
from smallab_db import ExperimentRunner, SpecError, UsageError, specification_hash
from smallab_db.callbacks import CallbackManager
from smallab_db.errors import ExperimentError
from smallab_db.experiment_types.experiment import Experiment, ExperimentBase
from smallab_db.name_helper.dict import dict2name, hash_dict
from smallab_db.runner_implementations.abstract_runner import SimpleAbstractRunner
from smallab_db.runner_implementations.fixed_resource.simple import SimpleFixedResourceAllocatorRunner
from smallab_db.runner_implementations.joblib_runner import JoblibRunner
from smallab_db.runner_implementations.main_process_runner import MainRunner
from smallab_db.runner_implementations.multiprocessing_runner import MultiprocessingRunner
from smallab_db.utilities.email_hooks import EmailCallback, EmailCallbackBatchOnly

# Every public name of smallab 2.3.1 that scripts import, by module (the list, and what 2.3.1 has beside it).
SURFACE = {
    "runner.runner": ["ExperimentRunner"],
    "callbacks": ["CallbackManager", "PrintCallback"],
    "experiment_types.experiment": ["ExperimentBase", "Experiment"],
    "experiment_types.checkpointed_experiment": ["CheckpointedExperiment", "IterativeExperiment", "HasCheckpoint"],
    "experiment_types.overlapping_output_experiment": [
        "OverlappingOutputCheckpointedExperiment",
        "OverlappingOutputCheckpointedExperimentReturnValue",
    ],
    "runner_implementations.abstract_runner": ["BaseAbstractRunner", "SimpleAbstractRunner", "ComplexAbstractRunner"],
    "runner_implementations.main_process_runner": ["MainRunner"],
    "runner_implementations.multiprocessing_runner": ["MultiprocessingRunner"],
    "runner_implementations.joblib_runner": ["JoblibRunner"],
    "runner_implementations.fixed_resource.simple": ["SimpleFixedResourceAllocatorRunner"],
    "specification_generator": ["SpecificationGenerator", "MultiComputerGenerator"],
    "smallab_types": ["Specification", "ExpProgressTuple"],
    "name_helper.dict": ["dict2name", "hash_dict"],
    "file_locations": [
        "experiment_folder",
        "get_save_directory",
        "get_experiment_save_directory",
        "get_pkl_file_location",
        "get_json_file_location",
        "get_specification_file_location",
        "resolve_current_experiment_name",
        "get_save_file_directory",
        "get_partial_save_directory",
        "get_log_file",
        "get_experiment_local_storage",
        "get_specification_local_storage",
        "get_dashboard_file",
        "get_specification_save_dir",
    ],
    "utilities.email_hooks": ["EmailCallback", "EmailCallbackBatchOnly"],
    "utilities.hooks": ["format_exception"],
    "utilities.logging_callback": ["LoggingCallback"],
    "utilities.experiment_loading.experiment_loader": ["experiment_iterator"],
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_2x_name_is_where_2x_scripts_import_it(module: str) -> None:
    ours = importlib.import_module(f"smallab_db.{module}")
    theirs = importlib.import_module(f"smallab.{module}")
    for name in SURFACE[module]:
        assert hasattr(theirs, name), f"smallab 2.3.1 has no {module}.{name}: the list is wrong"
        assert hasattr(ours, name), f"smallab_db.{module} lacks {name}"


def test_the_specification_hash_is_where_smallab_s_tests_import_it() -> None:
    from smallab_db.specification_hashing import specification_hash as hashing

    assert hashing({"seed": 1}) == specification_hash({"seed": 1})


def test_there_is_one_runner_class() -> None:
    from smallab_db.runner.runner import ExperimentRunner as TwoX

    assert TwoX is smallab_db.ExperimentRunner is smallab_db.runner.ExperimentRunner


def test_a_plain_experiment_of_today_s_api_is_called_on_the_object_given_and_writes_no_folder(
    sqlite_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    class Counting(smallab_db.Experiment):
        calls = 0

        def main(self, specification: dict[str, Any]) -> dict[str, Any]:
            self.calls += 1
            return {"seed": specification["seed"]}

    experiment = Counting()
    ExperimentRunner(sqlite_path).run("today", [{"seed": 1}, {"seed": 2}], experiment, show_progress=False)
    assert experiment.calls == 2
    assert not (tmp_path / "experiment_runs").exists()
    assert not hasattr(experiment, "get_logger_name")


def test_each_run_of_a_2x_experiment_gets_its_own_copy(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)

    class Remembering(Experiment):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def main(self, specification: dict[str, Any]) -> dict[str, Any]:
            self.seen.append(specification["seed"])
            return {"seen": list(self.seen)}

    experiment = Remembering()
    runner = ExperimentRunner(sqlite_path)
    runner.run("copies", [{"seed": 1}, {"seed": 2}], experiment, specification_runner=MainRunner(False))
    assert experiment.seen == []
    assert sorted(run["result"]["seen"] for run in runner.results("copies")) == [[1], [2]]


def where(runner: ExperimentRunner, batch: str) -> list[dict[str, Any]]:
    return [run["result"] for run in runner.results(batch)]


def test_main_runner_runs_in_the_calling_thread(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    specification_runner = MainRunner()
    runner.run("main", [{"seed": seed} for seed in range(3)], WhereItRan(), specification_runner=specification_runner)
    assert {(result["pid"], result["thread"]) for result in where(runner, "main")} == {
        (os.getpid(), threading.get_ident())
    }
    assert sorted(spec["seed"] for spec in specification_runner.get_completed()) == [0, 1, 2]
    assert specification_runner.get_failed_specifications() == specification_runner.get_exceptions() == []


def test_joblib_runner_runs_in_threads_of_the_calling_process(
    sqlite_path: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    specifications = [{"seed": seed, "sleep": 0.3} for seed in range(4)]
    runner.run("threads", specifications, WhereItRan(), specification_runner=JoblibRunner(2), show_progress=False)
    results = where(runner, "threads")
    assert {result["pid"] for result in results} == {os.getpid()}
    assert threading.get_ident() not in {result["thread"] for result in results}
    assert _most_at_once(results) == 2


def test_multiprocessing_runner_runs_in_worker_processes(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    specifications = [{"seed": seed, "sleep": 0.3} for seed in range(4)] + [{"seed": 9, "fail": True}]
    specification_runner = MultiprocessingRunner(2)
    runner.on_specification_failure(None)
    runner.run("processes", specifications, WhereItRan(), specification_runner=specification_runner)
    results = where(runner, "processes")
    assert len(results) == 4 and os.getpid() not in {result["pid"] for result in results}
    assert _most_at_once(results) == 2
    assert specification_runner.get_failed_specifications() == [{"seed": 9, "fail": True}]
    assert "fails on purpose" in str(specification_runner.get_exceptions()[0])


def test_fixed_resources_go_to_one_running_run_each(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    specifications = [{"seed": seed, "sleep": 0.4} for seed in range(6)]
    allocator = SimpleFixedResourceAllocatorRunner(["gpu0", "gpu1"])
    runner.run("resources", specifications, WhereItRan(), specification_runner=allocator, show_progress=False)
    results = where(runner, "resources")
    assert len(results) == 6 and {result["resource"] for result in results} <= {"gpu0", "gpu1"}
    assert _most_at_once(results) == 2
    for resource in ("gpu0", "gpu1"):
        holding = [result for result in results if result["resource"] == resource]
        assert _most_at_once(holding) <= 1, f"two runs held {resource} at once"
    assert not any(Path(tmp_path).glob("smallab-db-resources-*"))


def _most_at_once(results: list[dict[str, Any]]) -> int:
    """How many runs ran at the same time at most, from their start and finish times."""
    events = sorted([(result["started"], 1) for result in results] + [(result["finished"], -1) for result in results])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


class MyOwnRunner(SimpleAbstractRunner):
    """A runner of a script's own, as one public project wrote for ray."""


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"specification_runner": MyOwnRunner()}, "a runner of your own.*MultiprocessingRunner.*backend="),
        ({"specification_runner": "MainRunner"}, "must be one of smallab 2.x's runners"),
        ({"specification_runner": MainRunner(), "num_parallel": 2}, "either specification_runner .* or num_parallel"),
        ({"specification_runner": SimpleFixedResourceAllocatorRunner([])}, "at least one resource"),
        ({"specification_runner": JoblibRunner(0)}, "n_jobs, an int other than 0"),
        ({"context_type": "teleport"}, "context_type must be one of .*spawn"),
        ({"use_dashboard": "yes"}, "use_dashboard must be True, False or None"),
        ({"propagate_exceptions": 1}, "propagate_exceptions must be True or False"),
        ({"force_pickle": None}, "force_pickle must be True or False"),
    ],
)
def test_bad_2x_keywords_are_refused_before_anything_is_written(
    sqlite_path: str, keywords: dict[str, Any], message: str
) -> None:
    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(UsageError, match=message):
        runner.run("refused", [{"seed": 1}], Square(), **keywords)
    assert runner.store.find_batch("refused") is None


def test_an_experiment_base_of_no_known_kind_is_refused(sqlite_path: str) -> None:
    class Nameless(ExperimentBase):
        pass

    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(ExperimentError, match="none of Experiment .*CheckpointedExperiment"):
        runner.run("refused", [{"seed": 1}], Nameless())
    assert runner.store.find_batch("refused") is None


def test_every_2x_keyword_at_once(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    summary = runner.run(
        "all keywords",
        [{"seed": 1}],
        WhereItRan(),
        continue_from_last_run=False,
        propagate_exceptions=False,
        force_pickle=True,
        specification_runner=MultiprocessingRunner(1),
        use_dashboard=True,
        context_type="spawn",
        multiprocessing_lib=None,
    )
    assert [spec["seed"] for spec in summary.completed] == [1]
    (run_folder,) = (tmp_path / "experiment_runs" / "all keywords" / "experiments").iterdir()
    assert sorted(path.name for path in run_folder.iterdir()) == ["run.pkl", "specification.json"]  # force_pickle


class FailsOnSeed(Experiment):
    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] == 1:
            raise ZeroDivisionError("seed 1 fails")
        return {"seed": specification["seed"]}


@pytest.mark.parametrize("specification_runner", [MainRunner(), MultiprocessingRunner(2)], ids=["serial", "processes"])
def test_propagate_exceptions_stores_the_first_failure_then_raises_it(
    sqlite_path: str, tmp_path: Path, monkeypatch: Any, specification_runner: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    batch_calls: list[str] = []
    runner.on_batch_complete(lambda completed: batch_calls.append("complete"))
    runner.on_batch_failure(lambda errors, failed: batch_calls.append("failure"))
    runner.on_specification_failure(None)
    specifications = [{"seed": seed} for seed in range(12)]
    with pytest.raises(ZeroDivisionError, match="seed 1 fails"):
        runner.run(
            "propagated",
            specifications,
            FailsOnSeed(),
            specification_runner=specification_runner,
            propagate_exceptions=True,
        )
    with sqlite3.connect(sqlite_path) as connection:
        rows = dict(connection.execute("SELECT json_extract(specification, '$.seed'), status FROM runs"))
        (traceback,) = connection.execute("SELECT traceback FROM runs WHERE status = 'failed'").fetchone()
    assert rows[1] == "failed" and "ZeroDivisionError: seed 1 fails" in traceback
    assert rows[0] in ("completed", "pending")
    assert "pending" in set(rows.values()), "the batch went on after the first failure"
    assert "running" not in set(rows.values())
    assert batch_calls == []
    summary = runner.run("propagated", specifications, FailsOnSeed(), specification_runner=MainRunner(False))
    assert len(summary.completed) + summary.skipped == 11 and len(summary.failed) == 1  # without it: to the end


class Pairs(Experiment):
    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        return {"received": specification, "types": [type(specification["pair"]).__name__]}


def test_tuples_in_2x_specifications_are_stored_and_hashed_as_lists(
    sqlite_path: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    given = {"pair": (1, 2), "nested": {"points": [(0, (1, 2))]}}
    as_lists = {"pair": [1, 2], "nested": {"points": [[0, [1, 2]]]}}
    summary = runner.run("tuples", [given], Pairs(), show_progress=False)
    assert summary.completed == [as_lists]
    ((stored, spec_hash),) = sqlite3.connect(sqlite_path).execute("SELECT specification, spec_hash FROM runs")
    assert spec_hash == specification_hash(as_lists)
    expected = {"specification": as_lists, "result": {"received": as_lists, "types": ["list"]}}
    assert runner.results("tuples") == [expected]
    assert runner.run("tuples", [as_lists], Pairs(), show_progress=False).skipped == 1  # one run, either way
    assert given == {"pair": (1, 2), "nested": {"points": [(0, (1, 2))]}}  # the caller's object is not changed
    with pytest.raises(SpecError, match="is a tuple"):  # today's API still refuses them, as documented
        runner.run("tuples", [given], lambda spec: {}, show_progress=False)


def test_2x_specifications_keep_their_key_order_for_names(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    runner.run("order", [{"seed": 1, "num_calls": 2}], WhereItRan(), show_progress=False)
    logs = list((tmp_path / "experiment_runs" / "order" / "logs").glob("*/*.log"))
    assert sorted(path.name for path in logs) == ["main.log", "seed-1_num_calls-2.log"]  # as 2.x named it


class Introspecting(Experiment):
    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        name = self.get_logger_name()
        self.logger.info("logged through self.logger")
        logging.getLogger(name).warning("logged through logging.getLogger")
        return {
            "logger": name,
            "sliced": name[8:],
            "logging_folder": self.get_logging_folder(),
            "specification_storage": self.get_specification_local_storage(),
            "experiment_storage": self.get_experiment_local_storage(),
            "logger_pickles": pickle.loads(pickle.dumps(name)) == name,
        }

    def get_name(self, specification: dict[str, Any]) -> str:
        return f"run_{specification['seed']}"


def test_logger_names_and_folders_keep_2x_formats(sqlite_path: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    runner.run("named", [{"seed": 4}], Introspecting(), show_progress=False)
    ((result, output),) = sqlite3.connect(sqlite_path).execute("SELECT result, output FROM runs").fetchall()
    result = pickle.loads(result)
    assert result["logger"] == "smallab.run_4" and result["sliced"] == "run_4" and result["logger_pickles"]
    assert result["experiment_storage"] == os.path.join("experiment_runs", "named", "tmp")
    assert result["specification_storage"] == os.path.join("experiment_runs", "named", "tmp", "run_4")
    assert result["logging_folder"].startswith(os.path.join("experiment_runs", "named", "logs", ""))
    for folder in ("experiment_storage", "specification_storage", "logging_folder"):
        assert (tmp_path / result[folder]).is_dir()
    assert " - smallab.run_4 - INFO - logged through self.logger" in output
    assert " - smallab.run_4 - WARNING - logged through logging.getLogger" in output


def test_name_helpers_keep_2x_formats_and_hash_dict_is_stable_across_processes() -> None:
    assert dict2name({"seed": 1, "lr": 0.5}) == "seed-1_lr-0.5"
    code = "from smallab_db.name_helper.dict import hash_dict; print(hash_dict({'seed': 1}))"
    printed = {
        processes.run(
            [sys.executable, "-c", code], timeout=60, env={**os.environ, "PYTHONHASHSEED": seed}, text=True, check=True
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert printed == {hash_dict({"seed": 1})} and hash_dict({"seed": 1}).isdigit()
    assert hash_dict({"seed": 1}) != hash_dict({"seed": 2})


class Recording(CallbackManager):
    def __init__(self, calls: list[Any], fail: bool = False) -> None:
        self.calls = calls
        self.fail = fail

    def on_specification_complete(self, specification: dict[str, Any], result: Any) -> None:
        self.calls.append((self.name, "complete", specification["seed"]))
        if self.fail:
            raise RuntimeError("a callback fails")

    def on_specification_failure(self, exception: BaseException, specification: dict[str, Any]) -> None:
        self.calls.append((self.name, "failure", specification["seed"], type(exception).__name__))

    def on_batch_complete(self, specifications: list[dict[str, Any]]) -> None:
        self.calls.append((self.name, "batch complete", len(specifications)))

    def on_batch_failure(self, errors: list[BaseException], specifications: list[dict[str, Any]]) -> None:
        self.calls.append((self.name, "batch failure", len(errors)))


def test_attached_callbacks_are_called_in_order_and_one_that_raises_stops_none(
    sqlite_path: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    first, second = [], []
    runner = ExperimentRunner(sqlite_path)
    runner.attach_callbacks([Recording(first, fail=True), Recording(second)])
    runner.run("called", [{"seed": 0}, {"seed": 1}], FailsOnSeed(), specification_runner=MainRunner(False))
    expected = [
        ("called", "complete", 0),
        ("called", "failure", 1, "ZeroDivisionError"),
        ("called", "batch complete", 1),
        ("called", "batch failure", 1),
    ]
    assert first == second == expected
    first.clear()
    runner.run("none completed", [{"seed": 1}], FailsOnSeed(), specification_runner=MainRunner(False))
    assert first == [("none completed", "failure", 1, "ZeroDivisionError"), ("none completed", "batch failure", 1)]
    runner.attach_callbacks([])
    first.clear()
    runner.run("detached", [{"seed": 1}], FailsOnSeed(), specification_runner=MainRunner(False))
    assert first == []


def test_email_callbacks_send_through_the_local_server(
    sqlite_path: str,
    tmp_path: Path,
    monkeypatch: Any,
    smtp_server: Any,  # noqa: F811
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(sqlite_path)
    runner.attach_callbacks([EmailCallback("me@example.org", smtp_server.port)])
    runner.run("mailed", [{"seed": 0}, {"seed": 1}], FailsOnSeed(), specification_runner=MainRunner(False))
    subjects = sorted(received.message["Subject"] for received in smtp_server.received)
    assert subjects == sorted(
        [
            "smallab-db: specification completed",
            "smallab-db: specification failed",
            "smallab-db: batch completed",
            "smallab-db: batch failed",
        ]
    )
    smtp_server.received.clear()
    runner.attach_callbacks([EmailCallbackBatchOnly("me@example.org", smtp_server.port)])
    runner.run("mailed", [{"seed": 2}, {"seed": 1}], FailsOnSeed(), specification_runner=MainRunner(False))
    assert sorted(received.message["Subject"] for received in smtp_server.received) == [
        "smallab-db: batch completed",
        "smallab-db: specification failed",
    ]


def test_a_2x_script_runs_in_a_fresh_interpreter_with_only_its_imports_renamed(tmp_path: Path) -> None:
    """The import paths load without the test suite's modules around (a script a user renamed by hand)."""
    script = tmp_path / "script.py"
    script.write_text(
        "from smallab_db.experiment_types.experiment import Experiment\n"
        "from smallab_db.runner.runner import ExperimentRunner\n"
        "from smallab_db.runner_implementations.main_process_runner import MainRunner\n"
        "from smallab_db.utilities.experiment_loading.experiment_loader import experiment_iterator\n"
        "class Doubling(Experiment):\n"
        "    def main(self, specification):\n"
        "        return {'double': 2 * specification['seed']}\n"
        "    def get_name(self, specification):\n"
        "        return str(specification['seed'])\n"
        "ExperimentRunner().run('fresh', [{'seed': 3}], Doubling(), specification_runner=MainRunner(), "
        "use_dashboard=False)\n"
        "print(list(experiment_iterator('fresh')))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    done = processes.run([sys.executable, str(script)], timeout=120, cwd=tmp_path, env=environment, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[{'specification': {'seed': 3}, 'result': {'double': 6}}]"
    assert (tmp_path / "smallab.db").is_file()
    assert isinstance(done, subprocess.CompletedProcess)
