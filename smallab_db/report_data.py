"""What ``smallab-db report`` shows, gathered from the database in a few aggregate queries and one streamed pass
over the batch's runs, keeping only bounded summaries, so that memory stays flat however big the batch is."""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from smallab_db.experiment import Result, Specification
from smallab_db.queries import RunQueries
from smallab_db.records import stored_utc
from smallab_db.results import duration_seconds
from smallab_db.schema import COMPLETED, FAILED, STATUSES, runs

MAX_TABLE_ROWS = 1000  # the table of runs lists the batch's first runs
MAX_TIMELINE_RUNS = 2000  # the timeline draws the batch's last finished runs
MAX_ERROR_TYPES = 50  # failures are grouped by error type, the most frequent first
MAX_RESULT_FIELDS = 20  # the numeric result fields plotted, in the order first met
MAX_KEY_VALUES = 100  # a specification key with more distinct values is not plotted
DURATION_BINS_PER_DECADE = 10  # durations are counted in bins of equal width on a logarithmic scale
RESULT_TEXT_LENGTH = 200  # a result's JSON is cut to this many characters in the table


@dataclass
class Spread:
    """The count, mean and spread of a series of numbers, accumulated one at a time (Welford's method)."""

    count: int = 0
    mean: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        """Count ``value`` in."""
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)

    @property
    def deviation(self) -> float:
        """The sample standard deviation (0 for a single value)."""
        return math.sqrt(self.squares / (self.count - 1)) if self.count > 1 else 0.0


@dataclass(frozen=True)
class FailureGroup:
    """The failures of one error type: how many, and one of them in full."""

    error_type: str
    count: int
    spec_hash: str
    message: str
    traceback: str


@dataclass(frozen=True)
class TimelineRun:
    """A finished run, as the timeline draws it."""

    host: str
    started_at: datetime
    finished_at: datetime
    spec_hash: str
    status: str


@dataclass
class ReportData:
    """Everything the report shows about one batch."""

    batch: str
    counts: dict[str, int]
    failures: list[FailureGroup]
    table: list[dict[str, Any]] = field(default_factory=list)
    timeline: deque[TimelineRun] = field(default_factory=lambda: deque(maxlen=MAX_TIMELINE_RUNS))
    duration_bins: dict[int, int] = field(default_factory=dict)  # bin index (see duration_bin) -> runs in it
    # (result field, specification key, the key's value as JSON) -> the field's spread over the runs with that value
    effects: dict[tuple[str, str, str], Spread] = field(default_factory=dict)
    key_values: dict[str, set[str]] = field(default_factory=dict)  # each specification key's values, as JSON
    crowded_keys: set[str] = field(default_factory=set)  # keys with more than MAX_KEY_VALUES values
    result_fields: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def varying_keys(self) -> list[str]:
        """The specification keys that take more than one value in the batch, and not too many to plot."""
        chosen = (key for key, values in self.key_values.items() if len(values) > 1 and key not in self.crowded_keys)
        return sorted(chosen)


def gather(queries: RunQueries, batch_id: int, batch: str) -> ReportData:
    """Read the report's data about batch ``batch`` (whose id is ``batch_id``)."""
    chosen = runs.c.batch_id == batch_id
    counted = queries.read(select(runs.c.status, func.count()).where(chosen).group_by(runs.c.status))
    counts = {status: 0 for status in STATUSES} | {status: count for status, count in counted}
    data = ReportData(batch, counts, _failure_groups(queries, chosen))
    columns = (runs.c.spec_hash, runs.c.status, runs.c.attempts, runs.c.host, runs.c.started_at, runs.c.finished_at)
    query = select(*columns, runs.c.error_type, runs.c.specification, runs.c.result_json).where(chosen)
    for row in queries.stream(query.order_by(runs.c.id)):
        _count_in(data, row)
    return data


def duration_bin(seconds: float) -> int:
    """The index of the logarithmic bin holding ``seconds``; bin ``i`` spans ``10**(i/DURATION_BINS_PER_DECADE)``
    up to the next; durations under a microsecond share the bin of a microsecond."""
    return math.floor(math.log10(max(seconds, 1e-6)) * DURATION_BINS_PER_DECADE)


def _failure_groups(queries: RunQueries, chosen: Any) -> list[FailureGroup]:
    """The batch's failures by error type, the most frequent first, each with its first run's traceback."""
    failed = chosen & (runs.c.status == FAILED)
    groups = queries.read(
        select(runs.c.error_type, func.count(), func.min(runs.c.id))
        .where(failed)
        .group_by(runs.c.error_type)
        .order_by(func.count().desc(), runs.c.error_type)
        .limit(MAX_ERROR_TYPES)
    )
    details = queries.read(
        select(runs.c.id, runs.c.spec_hash, runs.c.error_message, runs.c.traceback).where(
            runs.c.id.in_([first for _, _, first in groups])
        )
    )
    by_id = {row.id: row for row in details}
    return [
        FailureGroup(
            error_type or "(no error type)",
            count,
            by_id[first].spec_hash,
            by_id[first].error_message or "",
            by_id[first].traceback or "",
        )
        for error_type, count, first in groups
    ]


def _count_in(data: ReportData, row: Any) -> None:
    """Add one run to the summaries."""
    started, finished = stored_utc(row.started_at), stored_utc(row.finished_at)
    duration = duration_seconds(started, finished) if row.status in (COMPLETED, FAILED) else None
    specification = row.specification if isinstance(row.specification, dict) else {}
    for key, value in specification.items():
        _note_value(data, key, json.dumps(value, sort_keys=True))
    if len(data.table) < MAX_TABLE_ROWS:
        data.table.append(
            {
                "hash": row.spec_hash[:12],
                "status": row.status,
                "attempts": row.attempts,
                "host": row.host or "",
                "started": "" if started is None else f"{started:%Y-%m-%d %H:%M:%S}",
                "duration_s": duration,
                "error type": row.error_type or "",
                "specification": specification,
                "result": "" if row.result_json is None else json.dumps(row.result_json)[:RESULT_TEXT_LENGTH],
            }
        )
    if duration is None or started is None or finished is None:
        return
    data.timeline.append(TimelineRun(row.host or "?", started, finished, row.spec_hash, row.status))
    bin_index = duration_bin(duration)
    data.duration_bins[bin_index] = data.duration_bins.get(bin_index, 0) + 1
    if row.status == COMPLETED and isinstance(row.result_json, dict):
        _note_results(data, specification, row.result_json)


def _note_value(data: ReportData, key: str, value: str) -> None:
    if key in data.crowded_keys:
        return
    values = data.key_values.setdefault(key, set())
    values.add(value)
    if len(values) > MAX_KEY_VALUES:
        data.crowded_keys.add(key)
        values.clear()
        for effect in [effect for effect in data.effects if effect[1] == key]:
            del data.effects[effect]


def _note_results(data: ReportData, specification: Specification, result: Result) -> None:
    for name, value in result.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        if name not in data.result_fields:
            if len(data.result_fields) == MAX_RESULT_FIELDS:
                continue
            data.result_fields.append(name)
        for key, key_value in specification.items():
            if key not in data.crowded_keys:
                data.effects.setdefault((name, key, json.dumps(key_value, sort_keys=True)), Spread()).add(value)
