"""Make the screenshots of docs/seeing-a-sweep.md: ``smallab-db watch`` during a real sweep, and its report.

Two runner processes, as two machines (``$SMALLAB_DB_SIMULATED_HOST``), share a sweep on one SQLite file. While
they run, ``smallab-db watch`` runs in a tmux terminal; its screen is captured as text and drawn, as a terminal
would, in an HTML ``<pre>`` photographed by headless Chromium. Once they finish, ``smallab-db report`` writes the
report, photographed the same way. Needs tmux, Chromium and ``pip install '.[report]'``.

Usage: python scripts/docs_screenshots.py  (writes docs/images/watch.png and docs/images/report.png)
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
SMALLAB_DB = str(Path(sys.executable).parent / "smallab-db")
EXPERIMENT = '''
import sys
import time

from smallab_db import ExperimentRunner
from smallab_db.experiment_types.checkpointed_experiment import CheckpointedExperiment


class Training(CheckpointedExperiment):
    """A pretend training run in steps, reporting (step, total); diverges for one setting."""

    def initialize(self, specification):
        self.specification = specification
        self.step_number = 0

    def step(self):
        spec = self.specification
        self.step_number += 1
        time.sleep(0.05 * spec["width"] / 16)
        if spec["lr"] == 0.3 and spec["seed"] == 2 and self.step_number == 10:
            raise FloatingPointError("the loss became NaN")
        if spec["width"] == 128 and spec["seed"] == 0 and self.step_number == 5:
            raise MemoryError("out of memory")
        if self.step_number < 40:
            return (self.step_number, 40)
        accuracy = 0.6 + 0.5 * spec["lr"] - spec["lr"] ** 2 + 0.0005 * spec["width"] + 0.01 * spec["seed"]
        return {"accuracy": accuracy, "loss": 1 - accuracy + 0.02 * spec["seed"]}


specifications = [
    {"lr": lr, "width": width, "seed": seed} for lr in (0.01, 0.1, 0.3) for width in (16, 64, 128) for seed in range(4)
]
runner = ExperimentRunner(sys.argv[1])
runner.on_specification_failure(None)
runner.run("lr-sweep", specifications, Training(), num_parallel=2, show_progress=False)
'''
TERMINAL_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
pre {{ margin: 0; padding: 14px; color: #d4d4d4; font: 14px/1.35 "DejaVu Sans Mono", monospace; }}
</style></head><body><pre>{screen}</pre></body></html>
"""


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="smallab-screenshots-"))
    database = str(folder / "results.db")
    (folder / "sweep.py").write_text(EXPERIMENT)
    runners = [
        subprocess.Popen(
            [sys.executable, "sweep.py", database], cwd=folder, env={**os.environ, "SMALLAB_DB_SIMULATED_HOST": host}
        )
        for host in ("node-1", "node-2")
    ]
    time.sleep(25)  # some runs done, some failed, some running
    screen = watch_screen(folder, database)
    photograph(folder, TERMINAL_PAGE.format(screen=html.escape(screen)), IMAGES / "watch.png", (1100, 560))
    for runner in runners:
        runner.wait(timeout=600)
    report = folder / "report.html"
    subprocess.run([SMALLAB_DB, "report", database, "--batch", "lr-sweep", "-o", str(report)], check=True)
    photograph(folder, report.read_text(encoding="utf-8"), IMAGES / "report.png", (1300, 2400))
    shutil.rmtree(folder)


def watch_screen(folder: Path, database: str) -> str:
    """The text of the tmux pane running ``smallab-db watch`` on the sweep."""
    socket = str(folder / "tmux")
    tmux = ["tmux", "-S", socket]
    command = f"{SMALLAB_DB} watch {database} --batch lr-sweep"
    subprocess.run([*tmux, "new-session", "-d", "-s", "watch", "-x", "110", "-y", "30", command], check=True)
    try:
        time.sleep(3)
        captured = subprocess.run([*tmux, "capture-pane", "-p", "-t", "watch"], check=True, capture_output=True)
        subprocess.run([*tmux, "send-keys", "-t", "watch", "q"], check=True)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    return captured.stdout.decode().rstrip()


def photograph(folder: Path, page: str, image: Path, size: tuple[int, int]) -> None:
    """Screenshot ``page`` in headless Chromium, offline, at ``size`` pixels."""
    source = folder / "page.html"
    source.write_text(page, encoding="utf-8")
    subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={folder / 'profile'}",
            "--virtual-time-budget=20000",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={image}",
            source.as_uri(),
        ],
        check=True,
        capture_output=True,
    )


if __name__ == "__main__":
    main()
