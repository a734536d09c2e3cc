"""The page "Running on a cluster" (``docs/cluster.md``) cannot rot: its SLURM job-array script runs, with the page's
experiment and grid, as concurrent local processes standing in for the array's tasks, on one PostgreSQL database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import processes
import sqlalchemy as sa
from runner_processes import rows

from smallab_db.schema import runs

PAGE = Path(__file__).resolve().parent.parent / "docs" / "cluster.md"
TASKS = 3


def page_files() -> dict[str, str]:
    """The files the page shows, each a fenced block after a ``<!-- file: NAME -->`` line."""
    blocks = re.findall(r"^<!-- file: (\S+) -->\n```\w*\n(.*?)^```", PAGE.read_text(), re.MULTILINE | re.DOTALL)
    return dict(blocks)


def test_the_page_shows_a_job_array_script_and_how_to_submit_it() -> None:
    script = page_files()["sweep.sh"]
    assert re.search(r"^#SBATCH --array=\d+-\d+$", script, re.MULTILINE)
    assert "smallab-db run " in script
    assert "sbatch sweep.sh" in PAGE.read_text()


def test_the_job_array_script_runs_as_concurrent_tasks_and_completes_the_batch(
    postgres_url: str, tmp_path: Path
) -> None:
    folder, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    files = page_files()
    for name, text in files.items():
        (folder / name).write_text(text)
    grid = json.loads(files["grid.json"])
    count = len(grid["seed"]) * len(grid["steps"])
    tasks = []
    for index in range(TASKS):
        environment = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # where smallab-db is
            "SMALLAB_DB": postgres_url,  # exported before sbatch, as the page says
            "SLURM_SUBMIT_DIR": str(folder),
            "SLURM_ARRAY_TASK_ID": str(index),
            "SLURM_CPUS_PER_TASK": "1",
        }
        tasks.append(
            processes.spawn(
                ["bash", str(folder / "sweep.sh")],
                cwd=elsewhere,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [task.communicate(timeout=240) for task in tasks]
    for task, (_, err) in zip(tasks, outputs, strict=True):
        assert task.returncode == 0, err
    completed = [int(out.split(": ")[1].split()[0]) for out, _ in outputs]  # "batch 'sweep': N completed, …"
    assert sum(completed) == count, outputs
    query = sa.select(runs.c.specification, runs.c.status, runs.c.attempts)
    stored = {
        json.dumps(spec, sort_keys=True): (status, attempts) for spec, status, attempts in rows(postgres_url, query)
    }
    assert len(stored) == count and set(stored.values()) == {("completed", 1)}
