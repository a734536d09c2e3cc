"""Starting ``workloads.py`` runners as real processes, and reading what they left in their SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from processes import spawn

WORKLOAD = Path(__file__).resolve().parent / "workloads.py"


def start_runner(
    database: str, batch: str, count: int, markers: Path, *options: str, wait_started: bool = True
) -> subprocess.Popen[str]:
    """Start ``workloads.py`` in its own process group; by default wait until it has opened the database."""
    markers.mkdir(exist_ok=True)
    process: subprocess.Popen[str] = spawn(
        [sys.executable, str(WORKLOAD), database, batch, str(count), "--markers", str(markers), *options],
        cwd=markers.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if wait_started:
        wait_started_line(process)
    return process


def wait_started_line(process: subprocess.Popen[str]) -> None:
    """Wait for the line ``started`` that the runner prints once it has opened the database."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line == "started", process.stderr.read() if process.stderr else line


def statuses(database: str) -> dict[int, tuple[str, int, bytes | None]]:
    """Map each seed to its run's (status, attempts, result pickle)."""
    with sqlite3.connect(database) as connection:
        query = "SELECT json_extract(specification, '$.seed'), status, attempts, result FROM runs"
        return {seed: (status, attempts, result) for seed, status, attempts, result in connection.execute(query)}


def wait_for_completed(database: str, at_least: int, process: subprocess.Popen[str]) -> None:
    """Poll the database until ``at_least`` runs are completed (at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the runner ended before the test could interrupt it"
        try:
            done = sum(status == "completed" for status, _, _ in statuses(database).values())
        except sqlite3.OperationalError:  # the tables do not exist yet
            done = 0
        if done >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} runs completed within 60 s")
