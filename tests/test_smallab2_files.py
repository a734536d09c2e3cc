"""What a run through the smallab 2.x surface leaves in ``experiment_runs/<name>``, and reading batches back: logs
where 2.x wrote them, an export that smallab 2.3.1's own reader reads, the file helpers pointing at it,
``experiment_iterator`` from the database or from a tree, no file left open, and each run's output stored."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import processes
import pytest
from smallab2_workloads import WhereItRan

from smallab_db import ExperimentRunner, ExportError, UnreadableResultWarning
from smallab_db import file_locations as ours
from smallab_db.experiment_types.experiment import Experiment
from smallab_db.run_output import MAX_OUTPUT_CHARACTERS
from smallab_db.runner_implementations.joblib_runner import JoblibRunner
from smallab_db.runner_implementations.main_process_runner import MainRunner
from smallab_db.utilities.experiment_loading.experiment_loader import experiment_iterator

SPECIFICATIONS = [{"seed": 1}, {"seed": 2, "fail": True}, {"seed": 3, "point": (1, 2)}]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in ``tmp_path``, with the default database ``./smallab.db``, as a 2.x script does in its folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMALLAB_DB", raising=False)
    return tmp_path


def run_batch(name: str = "files", **keywords: Any) -> ExperimentRunner:
    runner = ExperimentRunner()
    runner.on_specification_failure(None)
    runner.run(name, SPECIFICATIONS, WhereItRan(), specification_runner=MainRunner(False), **keywords)
    return runner


def test_logs_go_where_2x_wrote_them(in_tmp: Path) -> None:
    run_batch()
    (call,) = (in_tmp / "experiment_runs" / "files" / "logs").iterdir()
    logs = {path.name: path.read_text() for path in call.iterdir()}
    assert sorted(logs) == ["main.log", "seed-1.log", "seed-2_fail-True.log", "seed-3_point-[1, 2].log"]
    assert logs["seed-1.log"].endswith(" - smallab.seed-1 - INFO - running seed 1\n")
    assert " - smallab.seed-2_fail-True - ERROR - Specification Failure\nTraceback" in logs["seed-2_fail-True.log"]
    assert "RuntimeError: seed 2 fails on purpose" in logs["seed-2_fail-True.log"]
    assert "running batch 'files'" in logs["main.log"] and "smallab.seed-1 - INFO - running seed 1" in logs["main.log"]
    failed = in_tmp / "experiment_runs" / "files" / "failed" / call.name / "seed-2_fail-True.log"
    assert failed.read_text() == logs["seed-2_fail-True.log"]


def test_the_export_is_what_smallab_2_3_1_reads(in_tmp: Path) -> None:
    run_batch()
    batch = in_tmp / "experiment_runs" / "files"
    assert json.loads((batch / "completed.json").read_text()) == [{"seed": 1}, {"point": [1, 2], "seed": 3}]
    assert json.loads((batch / "failed.json").read_text()) == [{"fail": True, "seed": 2}]
    code = (
        "import json; from smallab.utilities.experiment_loading.experiment_loader import experiment_iterator; "
        "print(json.dumps(sorted((r['specification']['seed'], r['result']['seed']) "
        "for r in experiment_iterator('files'))))"
    )
    read = processes.run([sys.executable, "-c", code], timeout=120, cwd=in_tmp, text=True, check=True)
    assert json.loads(read.stdout) == [[1, 1], [3, 3]]


def test_force_pickle_exports_every_result_as_a_pickle(in_tmp: Path) -> None:
    run_batch(force_pickle=True)
    files = sorted(path.name for path in (in_tmp / "experiment_runs" / "files" / "experiments").glob("*/*"))
    assert files == ["run.pkl", "run.pkl", "specification.json", "specification.json"]


def test_the_file_helpers_point_at_the_exported_files(in_tmp: Path) -> None:
    run_batch()
    json_file = Path(ours.get_json_file_location("files", {"seed": 3, "point": (1, 2)}, WhereItRan()))
    record = json.loads(json_file.read_text())
    assert record["specification"] == {"point": [1, 2], "seed": 3} and record["result"]["seed"] == 3
    assert Path(ours.get_save_file_directory("files", {"seed": 1})).is_dir()
    assert not Path(ours.get_save_file_directory("files", {"seed": 2, "fail": True})).exists()  # failed: no record
    assert ours.get_save_directory("files") == os.path.join("experiment_runs", "files")
    assert ours.get_specification_local_storage("files", {"seed": 1}, WhereItRan()) == os.path.join(
        "experiment_runs", "files", "tmp", "seed-1"
    )


def test_deleting_the_folder_as_cleanup_helpers_do_then_running_again_writes_it_again(in_tmp: Path) -> None:
    run_batch()
    shutil.rmtree(in_tmp / "experiment_runs" / "files")
    runner = ExperimentRunner()
    summary = runner.run("files", SPECIFICATIONS[:1], WhereItRan(), specification_runner=MainRunner(False))
    assert summary.skipped == 1 and summary.completed == []
    assert len(list((in_tmp / "experiment_runs" / "files" / "experiments").iterdir())) == 2


def test_experiment_iterator_reads_the_database_then_an_exported_tree(in_tmp: Path) -> None:
    run_batch()
    from_database = sorted(record["specification"]["seed"] for record in experiment_iterator("files"))
    assert from_database == [1, 3]
    os.remove("smallab.db")  # only the tree is left
    records = list(experiment_iterator("files", use_tqdm=True))
    assert sorted(record["specification"]["seed"] for record in records) == [1, 3]
    assert list(experiment_iterator("no such batch")) == []


def test_experiment_iterator_reads_a_tree_smallab_2_3_1_wrote(in_tmp: Path) -> None:
    script = (
        "from smallab.experiment_types.experiment import Experiment\n"
        "from smallab.runner.runner import ExperimentRunner\n"
        "from smallab.runner_implementations.main_process_runner import MainRunner\n"
        "class Tripling(Experiment):\n"
        "    def main(self, specification):\n"
        "        return {'triple': 3 * specification['seed'], 'set': {1}} if specification['seed'] == 2 else "
        "{'triple': 3 * specification['seed']}\n"
        "    def get_name(self, specification):\n"
        "        return str(specification['seed'])\n"
        "ExperimentRunner().run('theirs', [{'seed': 1}, {'seed': 2}], Tripling(), specification_runner=MainRunner(), "
        "use_dashboard=False)\n"
    )
    processes.run([sys.executable, "-c", script], timeout=120, cwd=in_tmp, check=True)
    ExperimentRunner().close()  # a database without the batch: the tree is read
    by_seed = {record["specification"]["seed"]: record["result"] for record in experiment_iterator("theirs")}
    assert by_seed == {1: {"triple": 3}, 2: {"triple": 6, "set": {1}}}
    (pickled,) = Path("experiment_runs/theirs/experiments").glob("*/run.pkl")
    pickled.write_bytes(b"truncated")
    with pytest.warns(UnreadableResultWarning, match="could not be read"):
        assert [record["specification"] for record in experiment_iterator("theirs")] == [{"seed": 1}]


def open_files_below(folder: Path) -> list[str]:
    """The files this process holds open below ``folder``."""
    found = []
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith(str(folder)) and not target.endswith(("smallab.db", "smallab.db-wal", "smallab.db-shm")):
            found.append(target)
    return found


@pytest.mark.parametrize("specification_runner", [MainRunner(False), JoblibRunner(2)], ids=["serial", "threads"])
def test_no_file_stays_open_after_a_run(in_tmp: Path, specification_runner: Any) -> None:
    ExperimentRunner().run("closed", SPECIFICATIONS, WhereItRan(), specification_runner=specification_runner)
    assert (in_tmp / "experiment_runs" / "closed").is_dir()
    assert open_files_below(in_tmp) == []
    assert all(not isinstance(handler, logging.FileHandler) for handler in logging.getLogger("smallab").handlers)


class Chatty(Experiment):
    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        logger = logging.getLogger(self.get_logger_name())
        for line in range(specification["lines"]):
            logger.info("line %06d %s", line, "x" * 100)
        return {}


def test_a_run_s_output_keeps_its_newest_megabyte_and_says_it_was_cut(in_tmp: Path) -> None:
    specifications = [{"lines": 20_000}, {"lines": 3}]
    ExperimentRunner().run("chatty", specifications, Chatty(), specification_runner=MainRunner(False))
    with sqlite3.connect("smallab.db") as connection:
        outputs = dict(connection.execute("SELECT json_extract(specification, '$.lines'), output FROM run_details"))
    long, short = outputs[20_000], outputs[3]
    first_line, rest = long.split("\n", 1)
    assert first_line.startswith("[smallab-db: the first ") and first_line.endswith(
        f"characters of this run's output were dropped; the last {MAX_OUTPUT_CHARACTERS} are kept]"
    )
    assert len(rest) == MAX_OUTPUT_CHARACTERS and rest.endswith(f"line 019999 {'x' * 100}\n")
    assert "line 000000" not in long
    assert short.count("\n") == 3 and "line 000000" in short and not short.startswith("[smallab-db")


def test_an_export_that_fails_after_the_runs_are_stored_raises(in_tmp: Path) -> None:
    (in_tmp / "experiment_runs" / "blocked").mkdir(parents=True)
    (in_tmp / "experiment_runs" / "blocked" / "experiments").write_text("a file where the export's folder goes")
    runner = ExperimentRunner()
    with pytest.raises(ExportError, match="blocked"):
        runner.run("blocked", [{"seed": 1}], WhereItRan(), specification_runner=MainRunner(False))
    assert [record["specification"] for record in runner.results("blocked")] == [{"seed": 1}]
