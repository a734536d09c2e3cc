"""``smallab-db watch`` in a real terminal (tmux), beside a real runner process working on a batch: what it shows
matches the database, q and Ctrl-C end it with status 0 and the terminal as it was, and it idles on little CPU.
SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import pytest
import sqlalchemy as sa
from cli_checks import assert_clean_error
from click.testing import CliRunner
from processes import spawn
from runner_processes import rows
from terminal import Session, Terminal, terminal
from workloads import Square

from smallab_db import ExperimentRunner
from smallab_db.cli import main
from smallab_db.liveness import SIMULATED_HOST_ENV
from smallab_db.schema import batches, runs

SCRIPT = Path(sys.executable).parent / "smallab-db"
HOST = "node-7"
LONG_SEED = 5
TOTAL_STEPS = 100_000
# A runner script: of batch sweep, seeds 0-3 complete, 4 fails, 5 runs until the file ``release`` exists, reporting
# its progress.
RUNNER = f"""
import sys
import time
from pathlib import Path

from smallab_db import ExperimentRunner
from smallab_db.cli import main
from smallab_db.experiment_types.checkpointed_experiment import CheckpointedExperiment


class Sweep(CheckpointedExperiment):
    def initialize(self, specification):
        self.seed = specification["seed"]
        self.count = 0

    def step(self):
        self.count += 1
        if self.seed == 4:
            raise KeyError("seed 4 fails on purpose")
        if self.seed != {LONG_SEED} or Path("release").exists():
            return {{"seed": self.seed, "steps": self.count}}
        time.sleep(0.05)
        return (self.count, {TOTAL_STEPS})


runner = ExperimentRunner(sys.argv[1])
runner.on_specification_failure(None)
runner.run("sweep", [{{"seed": seed}} for seed in range(6)], Sweep(), show_progress=False)
"""
CPU_SECONDS = 5.0
MAX_IDLE_CPU = 0.2  # the promise is 2%; a 10x margin for a busy machine


def start_sweep(folder: Path, database: str) -> subprocess.Popen[bytes]:
    """Start the runner script on batch ``sweep`` as host ``node-7``, and wait until its long run has reported
    progress, the other five runs being finished."""
    (folder / "sweep.py").write_text(RUNNER)
    runner = spawn([sys.executable, "sweep.py", database], cwd=folder, env={**os.environ, SIMULATED_HOST_ENV: HOST})
    deadline = time.monotonic() + 60
    while not _long_run_reported_progress(database):
        assert runner.poll() is None, "the runner ended early"
        assert time.monotonic() < deadline, "the long run never reported progress"
        time.sleep(0.1)
    return runner


def _long_run_reported_progress(database: str) -> bool:
    try:
        found = rows(database, sa.select(runs.c.status, runs.c.progress).order_by(runs.c.id))
    except sa.exc.SQLAlchemyError:  # the tables do not exist yet
        return False
    statuses = [status for status, _ in found]
    return len(found) == 6 and statuses.count("running") == 1 and found[LONG_SEED][1] is not None


def shows_the_batch(lines: list[str]) -> bool:
    return any(line.startswith("sweep ") for line in lines) and any(HOST in line for line in lines)


def cells(lines: list[str], *header: str) -> list[list[str]]:
    """The rows of the table whose header line starts with the words ``header``, split into cells."""
    start = next(index for index, line in enumerate(lines) if line.split()[: len(header)] == list(header))
    table = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        table.append(line.split())
    return table


def watch(shell: Terminal, folder: Path, database: str) -> Session:
    """Start ``smallab-db watch DATABASE --batch sweep`` in the terminal."""
    return shell.start(f"{shlex.quote(str(SCRIPT))} watch {shlex.quote(database)} --batch sweep", folder)


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_watch_shows_what_the_database_holds_and_quits_cleanly(tmp_path: Path, database_url: str, key: str) -> None:
    """Beside a runner (host node-7) whose batch has 4 completed runs, 1 failed (KeyError) and 1 running with
    progress, watch shows those counts, the running run's hash, host and progress, and the failure's hash and error
    type, as the database holds them; then ``key`` ends it with status 0 and the terminal settings it had."""
    runner = start_sweep(tmp_path, database_url)
    with terminal() as shell:
        session = watch(shell, tmp_path, database_url)
        lines = session.wait_for_screen(shows_the_batch)

        found = rows(
            database_url,
            sa.select(runs.c.spec_hash, runs.c.status, runs.c.host, runs.c.error_type, runs.c.progress)
            .join(batches)
            .where(batches.c.name == "sweep"),
        )
        by_status = {status: [row for row in found if row.status == status] for status in ("completed", "failed")}
        (running,) = [row for row in found if row.status == "running"]
        (failed,) = by_status["failed"]
        (batch_line,) = cells(lines, "batch", "done/total")
        assert batch_line[:4] == ["sweep", f"{len(by_status['completed'])}/{len(found)}", "1", "1"], lines
        assert float(batch_line[4]) >= 0 and (batch_line[5] == "?" or batch_line[5].count(":") == 2)
        (running_line,) = cells(lines, "batch", "run", "host")
        assert running_line[:3] == ["sweep", running.spec_hash[:12], running.host] and running.host == HOST, lines
        assert running_line[4].endswith(f"/{TOTAL_STEPS}") and int(running_line[4].split("/")[0]) >= 1, lines
        (failure_line,) = cells(lines, "batch", "run", "error", "type")
        assert failure_line[:3] == ["sweep", failed.spec_hash[:12], failed.error_type] == ["sweep", ANY, "KeyError"]

        session.send_keys(key)
        assert session.wait_ended() == 0
        assert session.terminal_settings_restored()
    assert runner.poll() is None  # watching changed nothing for the runner


def test_watch_idles_on_little_cpu(tmp_path: Path, database_url: str) -> None:
    """On a finished batch, watch (redrawing every second) uses under 20% of a CPU over 5 s, from its own CPU time
    in /proc (the promise is 2%)."""
    with ExperimentRunner(database_url) as runner:
        runner.on_specification_failure(None)
        runner.run("sweep", [{"seed": seed} for seed in range(50)], Square(), show_progress=False)
    with terminal() as shell:
        session = watch(shell, tmp_path, database_url)
        session.wait_for_screen(lambda lines: any(line.startswith("sweep ") for line in lines))
        pid = session.pid("watch")
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(CPU_SECONDS)
        used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
        assert used / elapsed < MAX_IDLE_CPU, f"{used:.2f} s of CPU in {elapsed:.1f} s"
        session.send_keys("q")
        assert session.wait_ended() == 0


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_without_a_terminal_watch_says_to_add_once(sqlite_path: str) -> None:
    """Where standard input or output is not a terminal (a pipe, a script), the live view is refused with one line
    naming ``--once``; ``--once`` prints the view."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("sweep", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)

    refused = CliRunner().invoke(main, ["watch", sqlite_path])
    printed = CliRunner().invoke(main, ["watch", sqlite_path, "--once"])

    assert assert_clean_error(refused).startswith("Error: watch needs a terminal") and "--once" in refused.stderr
    assert printed.exit_code == 0 and "sweep  3/3  " in printed.stdout
