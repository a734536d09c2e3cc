"""What ``smallab-db watch`` shows, read in one SQL statement: per batch its counts and recent finishes, the
running runs with their host and progress, and the newest failures.

The statement is a ``UNION ALL`` of three parts, told apart by the column ``kind``, so that each refresh costs one
round trip, whatever the number of machines sharing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, Select, String, case, cast, func, literal, null, select, union_all

from smallab_db.records import stored_utc
from smallab_db.schema import COMPLETED, FAILED, RUNNING, batches, runs

RATE_WINDOW = timedelta(minutes=1)
MAX_BATCHES = 20  # without --batch, the newest batches
MAX_RUNNING = 20  # the running runs listed, longest running first
MAX_FAILURES = 5  # the newest failures listed

COLUMNS = (
    "kind", "batch", "spec_hash", "label", "at", "total", "completed", "failed", "running", "recent", "done", "whole"
)  # fmt: skip


@dataclass(frozen=True)
class BatchProgress:
    """One batch's counts; ``recent`` is how many of its runs finished (completed or failed) in the last minute."""

    name: str
    total: int
    completed: int
    failed: int
    running: int
    recent: int

    @property
    def remaining(self) -> int:
        """Runs not finished yet: pending or running."""
        return self.total - self.completed - self.failed

    @property
    def rate_per_minute(self) -> float:
        """Runs finished per minute, over the last minute."""
        return self.recent * timedelta(minutes=1) / RATE_WINDOW

    def eta(self) -> timedelta | None:
        """The time left at the rate of the last minute; None when nothing finished in it."""
        if self.remaining == 0:
            return timedelta(0)
        if self.recent == 0:
            return None
        return RATE_WINDOW * self.remaining / self.recent


@dataclass(frozen=True)
class RunningRun:
    """A running run: where it runs, since when, and its progress where the experiment reports it."""

    batch: str
    spec_hash: str
    host: str | None
    started_at: datetime | None
    progress: float | None
    progress_total: float | None


@dataclass(frozen=True)
class RecentFailure:
    """A failed run, with its error type."""

    batch: str
    spec_hash: str
    error_type: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh of ``watch`` shows, read at ``now``."""

    now: datetime
    batches: list[BatchProgress]
    running: list[RunningRun]
    failures: list[RecentFailure]


def snapshot_statement(batch_id: int | None, now: datetime) -> Select[Any]:
    """Return the one statement that reads a snapshot of the batch (every batch if None) at ``now``."""
    since = now - RATE_WINDOW
    shown: ColumnElement[bool]
    if batch_id is None:
        newest = select(batches.c.id).order_by(batches.c.id.desc()).limit(MAX_BATCHES).scalar_subquery()
        shown = batches.c.id.in_(newest)
    else:
        shown = batches.c.id == batch_id

    def counted(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    finished = runs.c.status.in_([COMPLETED, FAILED])
    per_batch = (
        _labelled(
            _text("batch"),
            batches.c.name,
            _null(String),
            _null(String),
            batches.c.created_at,
            func.count(runs.c.id),
            counted(runs.c.status == COMPLETED),
            counted(runs.c.status == FAILED),
            counted(runs.c.status == RUNNING),
            counted(finished & (runs.c.finished_at >= since)),
            _null(Float),
            _null(Float),
        )
        .select_from(batches.outerjoin(runs))
        .where(shown)
        .group_by(batches.c.id, batches.c.name, batches.c.created_at)
    )
    running = (
        _labelled(
            _text("running"),
            batches.c.name,
            runs.c.spec_hash,
            runs.c.host,
            runs.c.started_at,
            *(_null(Integer) for _ in range(5)),
            runs.c.progress,
            runs.c.progress_total,
        )
        .join(batches, batches.c.id == runs.c.batch_id)
        .where(shown, runs.c.status == RUNNING)
        .order_by(runs.c.started_at, runs.c.id)
        .limit(MAX_RUNNING)
    )
    failed = (
        _labelled(
            _text("failure"),
            batches.c.name,
            runs.c.spec_hash,
            runs.c.error_type,
            runs.c.finished_at,
            *(_null(Integer) for _ in range(5)),
            _null(Float),
            _null(Float),
        )
        .join(batches, batches.c.id == runs.c.batch_id)
        .where(shown, runs.c.status == FAILED)
        .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
        .limit(MAX_FAILURES)
    )
    parts = [select(part.subquery()) for part in (per_batch, running, failed)]  # each keeps its ORDER BY and LIMIT
    return select(union_all(*parts).subquery())


def snapshot_from_rows(rows: list[Any], now: datetime) -> Snapshot:
    """Sort the rows of :func:`snapshot_statement` into a :class:`Snapshot`: batches oldest first, running runs
    longest running first, failures newest first (a union keeps no order of its own)."""
    created: list[tuple[datetime, BatchProgress]] = []
    snapshot = Snapshot(now, [], [], [])
    for kind, batch, spec_hash, label, at, total, completed, failed, running, recent, done, whole in rows:
        if kind == "batch":
            created.append((stored_utc(at) or now, BatchProgress(batch, total, completed, failed, running, recent)))
        elif kind == "running":
            snapshot.running.append(RunningRun(batch, spec_hash, label, stored_utc(at), done, whole))
        else:
            snapshot.failures.append(RecentFailure(batch, spec_hash, label, stored_utc(at)))
    snapshot.batches.extend(progress for _, progress in sorted(created, key=lambda pair: pair[0]))
    snapshot.running.sort(key=lambda run: run.started_at or now)
    snapshot.failures.sort(key=lambda failure: failure.finished_at or now, reverse=True)
    return snapshot


def _labelled(*columns: Any) -> Select[Any]:
    """A select of ``columns`` named as :data:`COLUMNS`, so that the parts of the union line up."""
    return select(*(column.label(name) for column, name in zip(columns, COLUMNS, strict=True)))


def _text(value: str) -> Any:
    """A constant text column, typed so that PostgreSQL can unite it with the other parts'."""
    return cast(literal(value), String)


def _null(kind: Any) -> Any:
    """A NULL column of a type, so that PostgreSQL can unite it with the other parts' values."""
    return cast(null(), kind)
