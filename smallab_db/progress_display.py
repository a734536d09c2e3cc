"""Showing the progress that running runs store (``runs.progress``, ``runs.progress_total``), read from the
database once a second in a thread of its own, so it sees runs in worker processes and on other machines too.

Without the dashboard, the batch's progress bar says how many steps its running runs have done. With the dashboard
(``use_dashboard=True``), each running run gets a bar of its own below it on a terminal; without a terminal, a plain
line lists the running runs and their progress every :data:`PLAIN_LINE_SECONDS`. Any error of the display is logged
once and stops the display, never the batch.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from smallab_db.records import Specification
from smallab_db.store import RunStore

POLL_SECONDS = 1.0
PLAIN_LINE_SECONDS = 10.0
MAX_RUN_BARS = 20
RUN_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"  # steps come in jumps: no rate
logger = logging.getLogger("smallab_db")


class ProgressDisplay:
    """Shows the batch's running runs' progress until :meth:`close`.

    Args:
        store: where to read progress.
        batch_id: the batch.
        name: the batch's name.
        bar: the batch's progress bar.
        dashboard: give each running run a bar (a line without a terminal).
        run_name: names a run from its specification.
    """

    def __init__(
        self,
        store: RunStore,
        batch_id: int,
        name: str,
        bar: tqdm[Any],
        dashboard: bool,
        run_name: Callable[[Specification], str],
    ) -> None:
        self._store = store
        self._batch_id = batch_id
        self._bar = bar
        self._description = name
        self._dashboard = dashboard
        self._run_name = run_name
        self._names: dict[int, str] = {}
        self._run_bars: dict[int, tqdm[Any]] = {}
        self._last_line = ""
        self._line_at = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._work, name="smallab-db-progress", daemon=True)

    def start(self) -> None:
        """Start showing."""
        self._thread.start()

    def close(self) -> None:
        """Stop showing and remove the runs' bars."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._close_run_bars()

    def _work(self) -> None:
        if sys.stderr is None:  # started with standard error closed: nowhere to show anything
            return
        try:
            terminal = sys.stderr.isatty()
            while not self._stopped.wait(POLL_SECONDS):
                running = self._store.running_progress(self._batch_id)
                if not self._dashboard:
                    self._describe_steps(running)
                elif terminal:
                    self._draw_bars(running)
                else:
                    self._write_line(running)
        except Exception as error:  # a display never stops a batch
            logger.warning(
                "smallab-db: the progress display stopped (%s: %s); the batch goes on", type(error).__name__, error
            )
            self._close_run_bars()

    def _describe_steps(self, running: list[Any]) -> None:
        reported = [row for row in running if row.progress is not None]
        description = self._description
        if reported:
            done = sum(row.progress for row in reported)
            total = sum(row.progress_total or 0 for row in reported)
            description = f"{self._description} [steps of running runs: {done:g}/{total:g}]"
        self._bar.set_description(description, refresh=False)

    def _draw_bars(self, running: list[Any]) -> None:
        shown = {row.id: row for row in running[:MAX_RUN_BARS]}
        for run_id in list(self._run_bars):
            if run_id not in shown:
                self._run_bars.pop(run_id).close()
        for run_id, row in shown.items():
            run_bar = self._run_bars.get(run_id)
            if run_bar is None:
                run_bar = self._run_bars[run_id] = tqdm(desc=self._name(row), bar_format=RUN_BAR, leave=False)
            if row.progress_total is not None:
                run_bar.total = _whole(row.progress_total)
            if row.progress is not None:
                run_bar.n = _whole(row.progress)
            run_bar.refresh()

    def _write_line(self, running: list[Any]) -> None:
        parts = [f"{self._name(row)} {_fraction(row)}" for row in running[:MAX_RUN_BARS]]
        more = f" and {len(running) - MAX_RUN_BARS} more" if len(running) > MAX_RUN_BARS else ""
        line = f"{len(running)} running: {', '.join(parts)}{more}" if running else "none running"
        if line != self._last_line and time.monotonic() - self._line_at >= PLAIN_LINE_SECONDS:
            tqdm.write(f"smallab-db: {self._description}: {line}", file=sys.stderr)
            self._last_line, self._line_at = line, time.monotonic()

    def _name(self, row: Any) -> str:
        if row.id not in self._names:
            try:
                self._names[row.id] = str(self._run_name(row.specification))
            except Exception:  # the experiment's get_name failed here: the run will say why
                self._names[row.id] = f"run {row.id}"
        return self._names[row.id]

    def _close_run_bars(self) -> None:
        for run_bar in self._run_bars.values():
            try:
                run_bar.close()
            except Exception:  # the terminal went away: nothing left to tidy
                pass
        self._run_bars.clear()


def _whole(value: float) -> float | int:
    """Show ``3.0`` as ``3``."""
    return int(value) if value.is_integer() else value


def _fraction(row: Any) -> str:
    if row.progress is None:
        return "running"
    return f"{row.progress:g}/{row.progress_total:g}" if row.progress_total is not None else f"{row.progress:g}"

