"""The SQL queries of the docs' Querying page: each runs on SQLite and on PostgreSQL and returns the rows computed in
Python.

A query on the page is a ```sql block right after a comment line ``<!-- query: NAME dialect [dialect] -->``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from click.testing import CliRunner

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main

QUERYING_PAGE = Path(__file__).resolve().parent.parent / "docs" / "querying.md"
DIALECTS = ("sqlite", "postgresql")
BATCH = "doubling"
SPECIFICATIONS = [{"seed": seed, "size": size} for seed in (1, 2, 3) for size in (10, 20)]
FAILING = {"seed": 3, "size": 20}
SLEEPS = {(3, 10): 0.3, (2, 20): 0.2, (2, 10): 0.1}  # (seed, size): seconds
MESSAGE = "seed 3 with size 20 fails on purpose"
DURATION_TOLERANCE = 1e-6  # a microsecond: both databases keep the microseconds the runner stores


def documented_queries() -> dict[tuple[str, str], str]:
    """Return the Querying page's queries as ``{(name, dialect): sql}``, failing on a name given twice for a dialect."""
    text = QUERYING_PAGE.read_text(encoding="utf-8")
    queries: dict[tuple[str, str], str] = {}
    pattern = r"^<!-- query: (\S+) ([a-z ]+?) -->\n```sql\n(.*?)^```"
    for name, dialects, sql in re.findall(pattern, text, re.MULTILINE | re.DOTALL):
        for dialect in dialects.split():
            assert dialect in DIALECTS, f"query {name!r} names an unknown dialect {dialect!r}"
            assert (name, dialect) not in queries, f"query {name!r} is given twice for {dialect}"
            queries[name, dialect] = sql
    return queries


QUERIES = documented_queries()
NAMES = sorted({name for name, _ in QUERIES})


def doubling(specification: dict[str, Any]) -> dict[str, Any]:
    """The docs' example experiment, with one failure: ``seed * 2 + size / 100``, ValueError for seed 3 with size 20.

    The three slowest runs sleep 0.3, 0.2 and 0.1 s, the others not at all: 100 ms apart, ten times more than a busy
    machine's jitter, so the order of the durations is known.
    """
    time.sleep(SLEEPS.get((specification["seed"], specification["size"]), 0.0))
    if specification == FAILING:
        raise ValueError(MESSAGE)
    return {"number": specification["seed"] * 2 + specification["size"] / 100}


def number_of(specification: dict[str, Any]) -> float | None:
    """Return what :func:`doubling` returns for ``specification``, or None where it fails."""
    return None if specification == FAILING else specification["seed"] * 2 + specification["size"] / 100


class Database:
    """A database holding the batch ``doubling``, with the means to run SQL on it directly."""

    def __init__(self, dialect: str, url: str) -> None:
        self.dialect = dialect
        self.url = url
        self.engine = sqlalchemy.create_engine(url if "://" in url else f"sqlite:///{url}")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with the driver (sqlite3 or psycopg), without SQLAlchemy's parameter parsing."""
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(sql)]

    def durations(self) -> dict[str, float]:
        """Return each completed run's duration in seconds, computed in Python from its stored timestamps."""
        rows = self.rows(
            "SELECT spec_hash, started_at, finished_at FROM runs JOIN batches ON batches.id = runs.batch_id "
            f"WHERE batches.name = '{BATCH}' AND status = 'completed'"
        )
        return {
            spec_hash: (as_time(finished) - as_time(started)).total_seconds() for spec_hash, started, finished in rows
        }


def as_time(value: datetime | str) -> datetime:
    """Return a stored timestamp as a datetime (SQLite's driver returns the text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def as_json(value: Any) -> Any:
    """Return a JSON column's value as Python (SQLite returns the text, PostgreSQL the decoded value)."""
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The docs' batch ``doubling`` (five completed runs, one failed) on SQLite and on PostgreSQL."""
    with ExperimentRunner(database_url) as runner:
        runner.on_specification_failure(None)
        summary = runner.run(BATCH, SPECIFICATIONS, doubling, show_progress=False)
        assert len(summary.completed) == 5 and summary.failed == [FAILING]
        runner.run("other", [{"seed": 2, "size": 10}], lambda spec: {"number": -1.0}, show_progress=False)
    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    opened = Database(dialect, database_url)
    try:
        yield opened
    finally:
        opened.engine.dispose()


def query(name: str, dialect: str) -> str:
    """Return the Querying page's query ``name`` for ``dialect``, failing if the page lacks it."""
    assert (name, dialect) in QUERIES, f"docs/querying.md has no query {name!r} for {dialect}"
    return QUERIES[name, dialect]


def test_the_querying_page_has_the_documented_queries() -> None:
    """The four queries the tests below check are on the Querying page, and no other."""
    assert NAMES == ["failed", "matching", "mean_by_size", "slowest"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_query_exists_for_both_dialects(name: str, dialect: str) -> None:
    """Each query name has a block for SQLite and one for PostgreSQL."""
    assert (name, dialect) in QUERIES, f"docs/querying.md has no query {name!r} for {dialect}"
    assert f"'{BATCH}'" in QUERIES[name, dialect]


def test_mean_by_size(database: Database) -> None:
    """Per size, the mean number over the completed runs, ordered by size."""
    rows = database.rows(query("mean_by_size", database.dialect))

    expected: dict[int, list[float]] = {}
    for spec in SPECIFICATIONS:
        number = number_of(spec)
        if number is not None:
            expected.setdefault(spec["size"], []).append(number)
    assert [size for size, _ in rows] == sorted(expected) == [10, 20]
    for size, mean in rows:
        assert mean == pytest.approx(sum(expected[size]) / len(expected[size]))


def test_failed(database: Database) -> None:
    """Exactly the failing run, with its hash, specification, error type and message."""
    rows = database.rows(query("failed", database.dialect))

    assert len(rows) == 1
    spec_hash, specification, error_type, error_message = rows[0]
    assert spec_hash == specification_hash(FAILING)
    assert as_json(specification) == FAILING
    assert (error_type, error_message) == ("ValueError", MESSAGE)


def test_slowest(database: Database) -> None:
    """Three completed runs, by duration descending: they are the three slowest by their stored timestamps."""
    rows = database.rows(query("slowest", database.dialect))

    durations = database.durations()
    assert len(durations) == 5
    assert len(rows) == 3
    hashes = [spec_hash for spec_hash, _, _ in rows]
    assert len(set(hashes)) == 3 and set(hashes) <= set(durations)
    for spec_hash, specification, _ in rows:
        assert specification_hash(as_json(specification)) == spec_hash
    listed = [float(seconds) for _, _, seconds in rows]
    assert all(seconds >= 0 for seconds in listed)
    assert listed == sorted(listed, reverse=True)
    for spec_hash, seconds in zip(hashes, listed, strict=True):
        assert seconds == pytest.approx(durations[spec_hash], abs=DURATION_TOLERANCE)
    left_out = [seconds for spec_hash, seconds in durations.items() if spec_hash not in hashes]
    assert max(left_out) <= min(listed) + DURATION_TOLERANCE
    slowest_first = [{"seed": seed, "size": size} for seed, size in SLEEPS]  # by their sleeps
    assert [as_json(specification) for _, specification, _ in rows] == slowest_first


def test_matching(database: Database) -> None:
    """The runs with seed >= 2, in run order, with their numbers and None for the failed run."""
    rows = database.rows(query("matching", database.dialect))

    expected = [(spec["seed"], number_of(spec)) for spec in SPECIFICATIONS if spec["seed"] >= 2]
    assert [seed for seed, _ in rows] == [seed for seed, _ in expected]
    for (_, number), (_, expected_number) in zip(rows, expected, strict=True):
        if expected_number is None:
            assert number is None
        else:
            assert number == pytest.approx(expected_number)


@pytest.mark.parametrize("name", NAMES)
def test_every_query_runs_through_the_cli(database: Database, name: str) -> None:
    """``smallab-db query URL SQL --csv`` runs each documented query read-only and prints the same rows."""
    sql = query(name, database.dialect)
    result = CliRunner().invoke(main, ["query", database.url, sql, "--csv"], env={"SMALLAB_DB": None})

    assert result.exception is None and result.exit_code == 0, result.output
    assert result.stderr == ""
    header, *printed = list(csv.reader(io.StringIO(result.stdout)))
    rows = database.rows(sql)
    assert len(header) == len(rows[0])
    assert len(printed) == len(rows) > 0
    assert [line[0] for line in printed] == [str(row[0]) for row in rows]
