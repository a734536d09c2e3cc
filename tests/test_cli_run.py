"""``smallab-db run``: a batch from the shell, with the Python API's behaviour, progress and exit statuses, run
through the installed script in a folder holding the experiment's module, as a job script would."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import processes
import pytest
from runner_processes import statuses, wait_for_completed

SCRIPT = Path(sys.executable).parent / "smallab-db"

EXPERIMENTS = """
import os
import time
from pathlib import Path

from smallab_db import Experiment


class Doubling(Experiment):
    def main(self, specification):
        if specification.get("fail"):
            raise ValueError(f"seed {specification['seed']} fails on purpose")
        time.sleep(specification.get("sleep", 0))
        Path("markers", f"{specification['seed']}.{os.getpid()}.{time.monotonic_ns()}").touch()
        return {"seed": specification["seed"], "number": specification["seed"] * 2}


class NeedsArguments(Experiment):
    def __init__(self, size):
        self.size = size

    def main(self, specification):
        return {}


def triple(specification):
    return {"seed": specification["seed"], "number": specification["seed"] * 3}


doubling = Doubling()
not_an_experiment = 42
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A job's folder: the experiment's module, a grid and a list of specifications."""
    (tmp_path / "experiments.py").write_text(EXPERIMENTS)
    (tmp_path / "markers").mkdir()
    (tmp_path / "grid.json").write_text(json.dumps({"seed": [0, 1, 2], "size": [10, 20]}))
    (tmp_path / "specs.json").write_text(json.dumps([{"seed": seed} for seed in range(4)]))
    return tmp_path


def smallab_db(*arguments: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``smallab-db`` script in ``cwd``, without ``$SMALLAB_DB``."""
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    return processes.run([str(SCRIPT), *arguments], cwd=cwd, env=environment, text=True, timeout=timeout)


def run_batch(
    database: str, batch: str, *options: str, cwd: Path, experiment: str = "experiments:Doubling"
) -> subprocess.CompletedProcess[str]:
    """``smallab-db run DATABASE --batch BATCH --experiment EXPERIMENT OPTIONS…`` in ``cwd``."""
    return smallab_db("run", database, "--batch", batch, "--experiment", experiment, *options, cwd=cwd)


def executions(folder: Path) -> dict[int, int]:
    """How many times each seed was executed, from the experiment's marker files."""
    counts: dict[int, int] = {}
    for marker in (folder / "markers").iterdir():
        seed = int(marker.name.split(".")[0])
        counts[seed] = counts.get(seed, 0) + 1
    return counts


def test_a_grid_runs_and_a_second_run_skips_what_is_completed(folder: Path, database_url: str) -> None:
    first = run_batch(database_url, "grid", "--grid", "grid.json", cwd=folder)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "batch 'grid': 6 completed, 0 failed, 0 already completed\n"
    assert "6/6" in first.stderr  # the progress bar, on standard error
    again = run_batch(database_url, "grid", "--grid", "grid.json", "--no-progress", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "batch 'grid': 0 completed, 0 failed, 6 already completed\n" and again.stderr == ""
    assert executions(folder) == {0: 2, 1: 2, 2: 2}  # each seed with two sizes, each once
    assert {status for status, _, _ in statuses(database_url).values()} == {"completed"}


@pytest.mark.parametrize("name", ["Doubling", "doubling", "triple"], ids=["class", "instance", "function"])
def test_the_experiment_may_be_a_class_an_instance_or_a_function(folder: Path, sqlite_path: str, name: str) -> None:
    ran = run_batch(
        sqlite_path, "forms", "--specs", "specs.json", "--parallel", "2", cwd=folder, experiment=f"experiments:{name}"
    )
    assert ran.returncode == 0, ran.stderr
    assert "4 completed, 0 failed" in ran.stdout
    factor = 3 if name == "triple" else 2
    stored = statuses(sqlite_path)
    assert sorted(stored) == [0, 1, 2, 3] and {status for status, _, _ in stored.values()} == {"completed"}
    assert all(pickle.loads(result)["number"] == seed * factor for seed, (_, _, result) in stored.items())


def test_failed_runs_exit_1_saying_how_many_and_run_again_next_time(folder: Path, sqlite_path: str) -> None:
    (folder / "specs.json").write_text(json.dumps([{"seed": 0}, {"seed": 1, "fail": True}, {"seed": 2, "fail": True}]))
    ran = run_batch(sqlite_path, "failing", "--specs", "specs.json", "--no-progress", cwd=folder)
    assert ran.returncode == 1
    assert ran.stdout == "batch 'failing': 1 completed, 2 failed, 0 already completed\n"
    lines = ran.stderr.splitlines()
    assert sum("fails on purpose" in line for line in lines) == 2  # the default failure hook, as in Python
    assert lines[-1].startswith("Error: 2 run(s) of batch 'failing' failed")
    again = run_batch(sqlite_path, "failing", "--specs", "specs.json", "--no-progress", cwd=folder)
    assert again.returncode == 1 and "0 completed, 2 failed, 1 already completed" in again.stdout
    assert [attempts for _, attempts, _ in statuses(sqlite_path).values()] == [1, 2, 2]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--experiment", "missing_module:Doubling", "--specs", "specs.json"], "no module 'missing_module'"),
        (["--experiment", "experiments:Missing", "--specs", "specs.json"], "module 'experiments' has no 'Missing'"),
        (["--experiment", "experiments", "--specs", "specs.json"], "--experiment takes MODULE:NAME"),
        (["--experiment", "experiments:NeedsArguments", "--specs", "specs.json"], "cannot be made without arguments"),
        (["--experiment", "experiments:not_an_experiment", "--specs", "specs.json"], "must be an Experiment"),
        (["--experiment", "experiments:Doubling"], "exactly one of --specs"),
        (["--experiment", "experiments:Doubling", "--specs", "specs.json", "--grid", "grid.json"], "exactly one of"),
        (["--experiment", "experiments:Doubling", "--specs", "grid.json"], "--specs takes a JSON list"),
        (["--experiment", "experiments:Doubling", "--specs", "experiments.py"], "is not JSON"),
        (["--experiment", "experiments:Doubling", "--specs", "specs.json", "--lease", "0"], "--lease takes"),
        (["--experiment", "experiments:Doubling", "--specs", "specs.json", "--backend", "nope"], "backend must be"),
        (["--experiment", "experiments:Doubling", "--specs", "specs.json", "--backend", "dask"], "create one first"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_arguments_are_one_error_line_and_write_nothing(
    folder: Path, sqlite_path: str, arguments: list[str], message: str
) -> None:
    ran = smallab_db("run", sqlite_path, "--batch", "bad", *arguments, cwd=folder)
    assert ran.returncode == 1 and ran.stdout == ""
    assert ran.stderr.startswith("Error: ") and len(ran.stderr.splitlines()) == 1, ran.stderr
    assert message in ran.stderr
    assert not Path(sqlite_path).exists()


def test_specifications_that_are_not_json_objects_are_refused_before_anything_is_written(
    folder: Path, sqlite_path: str
) -> None:
    (folder / "specs.json").write_text('[{"seed": 1}, {"seed": NaN}]')
    ran = run_batch(sqlite_path, "nan", "--specs", "specs.json", cwd=folder)
    assert ran.returncode == 1 and ran.stderr.startswith("Error: in 'specs.json': specification #1"), ran.stderr
    assert not Path(sqlite_path).exists()
    assert executions(folder) == {}


def test_ctrl_c_stores_what_finished_and_exits_130(folder: Path, database_url: str) -> None:
    (folder / "specs.json").write_text(json.dumps([{"seed": seed, "sleep": 0.1} for seed in range(40)]))
    command = [
        str(SCRIPT),
        "run",
        database_url,
        "--batch",
        "stopped",
        "--experiment",
        "experiments:Doubling",
        "--specs",
        "specs.json",
        "--no-progress",
    ]
    running = processes.spawn(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_completed(database_url, 3, running)
    processes.kill_group(running, signal.SIGINT)
    _, err = running.communicate(timeout=60)
    assert running.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    stored = statuses(database_url)
    assert "running" not in {status for status, _, _ in stored.values()}
    resumed = run_batch(database_url, "stopped", "--specs", "specs.json", "--no-progress", cwd=folder)
    assert resumed.returncode == 0, resumed.stderr
    assert {status for status, _, _ in statuses(database_url).values()} == {"completed"}
    assert all(count == 1 for count in executions(folder).values())
