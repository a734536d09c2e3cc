"""The text of one ``smallab-db watch`` screen, drawn from a :class:`~smallab_db.sweep_snapshot.Snapshot`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from smallab_db import cli_output
from smallab_db.sweep_snapshot import MAX_RUNNING, BatchProgress, RunningRun, Snapshot

HASH_LENGTH = 12  # as `smallab-db runs` prints hashes

TITLE, PLAIN, FAILURE = "title", "plain", "failure"


@dataclass(frozen=True)
class Line:
    """One line of the screen and how it is drawn: ``title``, ``plain`` or ``failure``."""

    text: str
    style: str = PLAIN


def screen(snapshot: Snapshot, title: str) -> list[Line]:
    """Return the lines showing ``snapshot`` under ``title``: batches, running runs, newest failures."""
    lines = [Line(f"{title}  {snapshot.now:%Y-%m-%d %H:%M:%S} UTC", TITLE)]
    lines.append(Line(""))
    if not snapshot.batches:
        return [*lines, Line("no batches yet")]
    columns = ["batch", "done/total", "failed", "running", "rate/min", "ETA"]
    lines += _table(columns, [_batch_cells(batch) for batch in snapshot.batches])
    running = sum(batch.running for batch in snapshot.batches)
    lines += [Line(""), Line(f"running runs: {running}", TITLE)]
    if snapshot.running:
        cells = [_running_cells(run, snapshot.now) for run in snapshot.running]
        lines += _table(["batch", "run", "host", "elapsed", "progress"], cells)
        if running > len(snapshot.running):
            lines.append(Line(f"... and {running - len(snapshot.running)} more (the {MAX_RUNNING} longest shown)"))
    lines += [Line(""), Line("newest failures", TITLE)]
    if not snapshot.failures:
        return [*lines, Line("none")]
    cells = [
        [failure.batch, failure.spec_hash[:HASH_LENGTH], failure.error_type or "?", _clock(failure.finished_at)]
        for failure in snapshot.failures
    ]
    return lines + [Line(line.text, FAILURE) for line in _table(["batch", "run", "error type", "failed at"], cells)]


def _table(columns: list[str], rows: list[list[str]]) -> list[Line]:
    """An aligned table, as the other commands print them, one line per row."""
    return [Line(text) for text in cli_output.table(columns, rows).splitlines()]


def _batch_cells(batch: BatchProgress) -> list[str]:
    eta = batch.eta()
    return [
        cli_output.printable(batch.name),
        f"{batch.completed}/{batch.total}",
        str(batch.failed),
        str(batch.running),
        f"{batch.rate_per_minute:.1f}",
        "done" if batch.remaining == 0 else ("?" if eta is None else duration_text(eta)),
    ]


def _running_cells(run: RunningRun, now: datetime) -> list[str]:
    elapsed = "?" if run.started_at is None else duration_text(max(now - run.started_at, timedelta(0)))
    return [
        cli_output.printable(run.batch),
        run.spec_hash[:HASH_LENGTH],
        cli_output.printable(run.host or "?"),
        elapsed,
        progress_text(run.progress, run.progress_total),
    ]


def progress_text(progress: float | None, total: float | None) -> str:
    """``37/1000 (3.7%)``, ``37`` without a total, or nothing when the experiment reports none."""
    if progress is None:
        return ""
    done = f"{progress:g}"
    if not total:
        return done
    return f"{done}/{total:g} ({100 * progress / total:.1f}%)"


def duration_text(span: timedelta) -> str:
    """``H:MM:SS``, to the second."""
    seconds = int(span.total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _clock(moment: datetime | None) -> str:
    return "?" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"
