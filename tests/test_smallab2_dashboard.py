"""The progress display of ``use_dashboard``: bars per running run on a terminal, plain lines without one, nothing
(and no crash) with standard error closed; ``use_dashboard=False`` prints what runs log, as smallab 2.x did; the
plain bar shows the steps of running runs. Each runs ``smallab2_scripts/progress.py`` in a fresh interpreter."""

from __future__ import annotations

import fcntl
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import processes

SCRIPT = Path(__file__).resolve().parent / "smallab2_scripts" / "progress.py"


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}


def run_piped(folder: Path, dashboard: str) -> subprocess.CompletedProcess[str]:
    done = processes.run(
        [sys.executable, str(SCRIPT), dashboard], timeout=120, cwd=folder, env=environment(), text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "finished\n"
    return done


def completed_runs(folder: Path) -> int:
    with sqlite3.connect(folder / "smallab.db") as connection:
        return connection.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]


def test_without_a_terminal_the_dashboard_writes_plain_lines(tmp_path: Path) -> None:
    err = run_piped(tmp_path, "True").stderr
    assert "smallab-db: progress: 2 running: slow_0 " in err
    assert "/20, slow_1 " in err
    assert completed_runs(tmp_path) == 2


def test_on_a_terminal_the_dashboard_draws_a_bar_per_running_run(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    process = processes.spawn(
        [sys.executable, str(SCRIPT), "True"],
        cwd=tmp_path,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = process.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(leader)
    text = shown.decode(errors="replace")
    assert process.returncode == 0 and out == b"finished\n", text[-2000:]
    assert "slow_0:" in text and "slow_1:" in text and "/20 [" in text
    assert "running: slow_0" not in text  # bars, not the plain line
    assert completed_runs(tmp_path) == 2


def test_with_standard_error_closed_the_batch_completes(tmp_path: Path) -> None:
    done = processes.run(
        ["sh", "-c", f'exec "{sys.executable}" "{SCRIPT}" True 2>&-'], timeout=120, cwd=tmp_path, env=environment()
    )
    assert done.returncode == 0 and done.stdout == b"finished\n", done.stdout
    assert completed_runs(tmp_path) == 2


def test_use_dashboard_false_prints_what_runs_log(tmp_path: Path) -> None:
    err = run_piped(tmp_path, "False").stderr
    assert " - smallab.slow_0 - INFO - step 1\n" in err and " - smallab.slow_1 - INFO - step 20\n" in err


def test_the_plain_bar_shows_the_steps_of_running_runs(tmp_path: Path) -> None:
    err = run_piped(tmp_path, "None").stderr
    assert "progress [steps of running runs: " in err and "/40]" in err
    assert "smallab.slow_0 - INFO" not in err  # the records go to the log files, not the terminal
