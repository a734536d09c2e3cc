"""Bad input gets a clear SmallabError (or a clean CLI line), writes nothing, and loses nothing already stored."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import processes
import pytest
import unprivileged
from workloads import FailOnOdd, NotADict, Square, Unpicklable

from smallab_db import ExperimentError, ExperimentRunner, SmallabError, SpecError, UnreadableResultWarning, UsageError

SEEDS = [{"seed": seed} for seed in range(4)]


def snapshot(path: str) -> list[Any]:
    """Everything stored: every row of every table, in order."""
    with sqlite3.connect(path) as connection:
        return [
            connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("batches", "runs", "smallab_db_version")
        ]


class NotAnExperiment:
    """Has a main method but is neither an Experiment nor callable."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        return {}


BAD_CALLS: dict[str, tuple[type[SmallabError], Callable[[ExperimentRunner], Any]]] = {
    "nan": (SpecError, lambda r: r.run("kept", [{"x": float("nan")}], Square(), show_progress=False)),
    "infinity": (SpecError, lambda r: r.run("kept", [{"x": float("-inf")}], Square(), show_progress=False)),
    "set": (SpecError, lambda r: r.run("kept", [{"x": {1}}], Square(), show_progress=False)),
    "tuple": (SpecError, lambda r: r.run("kept", [{"x": (1, 2)}], Square(), show_progress=False)),
    "int key": (SpecError, lambda r: r.run("kept", [{1: "x"}], Square(), show_progress=False)),
    "object": (SpecError, lambda r: r.run("kept", [{"x": object()}], Square(), show_progress=False)),
    "non-dict item": (SpecError, lambda r: r.run("kept", [{"seed": 9}, [1]], Square(), show_progress=False)),
    "dict instead of list": (SpecError, lambda r: r.run("kept", {"seed": 1}, Square(), show_progress=False)),
    "string instead of list": (SpecError, lambda r: r.run("kept", "seed", Square(), show_progress=False)),
    "not an experiment": (ExperimentError, lambda r: r.run("kept", SEEDS, NotAnExperiment(), show_progress=False)),
    "experiment class": (ExperimentError, lambda r: r.run("kept", SEEDS, Square, show_progress=False)),
    "parallelism": (UsageError, lambda r: r.run("kept", SEEDS, Square(), num_parallel=0, show_progress=False)),
    "batch name": (UsageError, lambda r: r.run("", SEEDS, Square(), show_progress=False)),
    "unknown batch": (UsageError, lambda r: r.results("missing")),
    "unknown status": (UsageError, lambda r: r.results("kept", status="done")),
    "unknown layout": (UsageError, lambda r: r.export("kept", layout="nope")),
    "unknown backend": (UsageError, lambda r: r.run("kept", SEEDS, Square(), num_parallel=2, backend="nope")),
    "flag not a bool": (UsageError, lambda r: r.run("kept", SEEDS, Square(), continue_from_last_run="no")),
    "lone surrogate": (SpecError, lambda r: r.run("kept", [{"p": "\udcff"}], Square(), show_progress=False)),
    "import batch name": (UsageError, lambda r: r.import_folder(".", "")),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_raises_a_smallab_error_and_changes_nothing(sqlite_path: str, case: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    runner.run("kept", SEEDS, FailOnOdd(), show_progress=False)
    before = snapshot(sqlite_path)
    error_type, call = BAD_CALLS[case]
    with pytest.raises(error_type) as raised:
        call(runner)
    assert isinstance(raised.value, SmallabError)
    assert snapshot(sqlite_path) == before


@pytest.mark.parametrize("experiment", [NotADict(), Unpicklable()])
def test_bad_results_fail_their_run_only(sqlite_path: str, experiment: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    runner.run("kept", SEEDS, Square(), show_progress=False)
    summary = runner.run("bad", SEEDS, experiment, show_progress=False)
    assert summary.failed == SEEDS and all(isinstance(e, ExperimentError) for e in summary.exceptions)
    assert len(runner.results("kept")) == len(SEEDS)


def test_a_hook_that_raises_is_reported_once_and_the_batch_goes_on(
    sqlite_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    runner = ExperimentRunner(sqlite_path)

    def failing_hook(specifications: list[dict[str, Any]]) -> None:
        raise RuntimeError("the mail server is down")

    runner.on_batch_complete(failing_hook)
    runner.on_specification_complete(lambda spec, result: 1 / 0)
    summary = runner.run("hooks", SEEDS, Square(), show_progress=False)
    assert summary.completed == SEEDS
    messages = [record.getMessage() for record in caplog.records]
    assert sum("failing_hook" in message for message in messages) == 1
    assert sum("<lambda>" in message for message in messages) == 1  # four failures, reported once
    assert len(runner.results("hooks")) == len(SEEDS)


def test_results_that_no_longer_unpickle_are_named_and_the_rest_returned(tmp_path: Path) -> None:
    module_folder = tmp_path / "renamed_module"
    module_folder.mkdir()
    (module_folder / "lab_measurements.py").write_text(
        textwrap.dedent(
            """
            class Measurement:
                def __init__(self, value):
                    self.value = value
            """
        )
    )
    database = tmp_path / "old.db"
    program = textwrap.dedent(
        f"""
        from lab_measurements import Measurement
        from smallab_db import ExperimentRunner
        def main(spec):
            return {{"m": Measurement(spec["seed"])}} if spec["seed"] % 2 else {{"plain": spec["seed"]}}
        ExperimentRunner({str(database)!r}).run("old", [{{"seed": s}} for s in range(4)], main, show_progress=False)
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(module_folder)}
    processes.run([sys.executable, "-c", program], check=True, cwd=tmp_path, env=environment, timeout=120)
    runner = ExperimentRunner(database)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = runner.results("old")
    assert results == [
        {"specification": {"seed": 0}, "result": {"plain": 0}},
        {"specification": {"seed": 2}, "result": {"plain": 2}},
    ]
    (warning,) = [item for item in caught if issubclass(item.category, UnreadableResultWarning)]
    text = str(warning.message)
    assert "2 result(s) of batch 'old' could not be unpickled" in text
    assert "run 2 (" in text and "run 4 (" in text and "No module named 'lab_measurements'" in text

    with pytest.warns(UnreadableResultWarning, match="2 result"):
        frame = runner.dataframe("old")
    assert list(frame["result.plain"].dropna()) == [0, 2] and len(frame) == 4
    with pytest.warns(UnreadableResultWarning, match="2 result"):
        exported = runner.export("old", tmp_path / "tree")
    assert sorted(json.loads((exported / "completed.json").read_text()), key=str) == [{"seed": 0}, {"seed": 2}]


# -- read-only files and directories, as file permissions bind an ordinary user (root may write anything) ----------


@pytest.fixture
def bound_by_permissions() -> None:
    """The test runs steps that file modes bind, even as root (see tests/unprivileged.py)."""
    unprivileged.require()


OPEN = (
    "import sys\n"
    "from smallab_db import ExperimentRunner, SmallabError\n"
    "try:\n"
    "    ExperimentRunner(sys.argv[1])\n"
    "except SmallabError as error:\n"
    "    print(type(error).__name__, error)\n"
    "    raise SystemExit(3)\n"
)


@pytest.mark.usefixtures("bound_by_permissions")
def test_a_read_only_database_file_is_refused_and_stays_intact(tmp_path: Path) -> None:
    database = tmp_path / "runs.db"
    ExperimentRunner(database).run("kept", SEEDS, Square(), show_progress=False)
    database.chmod(0o444)
    before = database.read_bytes()
    opened = unprivileged.run([sys.executable, "-c", OPEN, str(database)], cwd=tmp_path)
    assert opened.returncode == 3, opened.stderr
    assert "DatabaseError" in opened.stdout and "is read-only: make it writable" in opened.stdout
    script = str(Path(sys.executable).parent / "smallab-db")
    status = unprivileged.run([script, "status", str(database)], cwd=tmp_path)  # reading needs no write access
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1].split() == ["kept", "0", "0", str(len(SEEDS)), "0"]
    retry = unprivileged.run([script, "retry", str(database), "--batch", "kept"], cwd=tmp_path)
    assert retry.returncode == 1 and retry.stderr.startswith("Error: ") and "Traceback" not in retry.stderr
    assert "is read-only" in retry.stderr
    query = unprivileged.run([script, "query", str(database), "SELECT count(*) AS n FROM runs"], cwd=tmp_path)
    assert query.returncode == 0, query.stderr
    assert query.stdout.split()[-1] == str(len(SEEDS))
    assert database.read_bytes() == before
    denied = unprivileged.run(["sh", "-c", f"echo x >> '{database}'"], cwd=tmp_path)  # the kernel refuses, too
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


@pytest.mark.usefixtures("bound_by_permissions")
def test_a_database_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    database = folder / "new.db"
    opened = unprivileged.run([sys.executable, "-c", OPEN, str(database)], cwd=tmp_path)
    assert opened.returncode == 3, opened.stderr
    assert "directory" in opened.stdout and "is not writable" in opened.stdout
    assert not database.exists()


def test_a_result_of_a_class_from_the_script_names_the_fix_under_worker_processes(tmp_path: Path) -> None:
    script = tmp_path / "experiment_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from smallab_db import ExperimentRunner

            class Point:
                def __init__(self, x):
                    self.x = x

            def main(spec):
                return {{"point": Point(spec["seed"])}}

            if __name__ == "__main__":
                runner = ExperimentRunner({str(tmp_path / "script.db")!r})
                runner.on_specification_failure(None)
                summary = runner.run("points", [{{"seed": 1}}, {{"seed": 2}}], main, num_parallel=2,
                                     show_progress=False)
                print(summary.exceptions[0])
            """
        )
    )
    completed = processes.run([sys.executable, str(script)], cwd=tmp_path, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "class defined in your script (__main__); move that class into a module" in completed.stdout
