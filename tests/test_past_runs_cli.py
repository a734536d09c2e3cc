"""Tests of the commands that look at and manage past runs: ``query``, ``runs``, ``show``, ``export``, ``import``,
``retry`` and ``rm``.

Databases are built with the real runner; the commands run in-process with click's ``CliRunner`` (checking with
``result.exception`` that a failure is a clean exit, not a crash) and, where it matters, as the installed script.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import processes
import pytest
import sqlalchemy
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main

SCRIPT = Path(sys.executable).parent / "smallab-db"
NO_ENV: dict[str, str | None] = {"SMALLAB_DB": None}  # the developer's own $SMALLAB_DB never leaks in

BATCH = "doubling"
SPECIFICATIONS = [{"seed": seed, "size": size} for seed in (1, 2, 3) for size in (10, 20)]
FAILING = {"seed": 3, "size": 20}
OLD_TIME = 1_000_000_000  # 2001-09-09: an mtime no export could give a file by accident


class OnlyInThisProcess:
    """A class that only the test process can import (``tests/`` is on its ``sys.path``, not on a subprocess's)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OnlyInThisProcess) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def doubling(specification: dict[str, Any]) -> dict[str, Any]:
    """The docs' example experiment: ``seed * 2 + size / 100``; raises ValueError for seed 3 with size 20."""
    if specification == FAILING:
        raise ValueError("seed 3 with size 20 fails on purpose")
    return {"number": specification["seed"] * 2 + specification["size"] / 100}


def number_of(specification: dict[str, Any]) -> float | None:
    """Return the number :func:`doubling` gives ``specification``, or None where it fails."""
    return None if specification == FAILING else specification["seed"] * 2 + specification["size"] / 100


def not_json(specification: dict[str, Any]) -> dict[str, Any]:
    """Return a result that is not JSON: a set and an object of a class defined in this test module."""
    return {"tags": {1, 2}, "marker": OnlyInThisProcess(specification["seed"])}


def build(database: str, name: str = BATCH, other: bool = True) -> None:
    """Run batch ``name`` of the docs' example experiment (one of six runs fails) and, unless told not to, a batch
    ``squares`` of two runs, then close the runner.

    Args:
        database: a path or URL.
        name: the name of the doubling batch.
        other: also run the batch ``squares``.
    """
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        summary = runner.run(name, SPECIFICATIONS, doubling, show_progress=False)
        assert len(summary.completed) == 5 and summary.failed == [FAILING]
        if other:
            runner.run("squares", [{"seed": 0}, {"seed": 1}], Square(), show_progress=False)


def invoke(*arguments: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
    """Run the click group in-process with ``arguments``; ``$SMALLAB_DB`` is unset unless ``env`` sets it."""
    return CliRunner().invoke(main, list(arguments), env=NO_ENV if env is None else env, input=input)


def run_script(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``smallab-db`` script in a real subprocess, without ``$SMALLAB_DB`` or ``$PYTHONPATH``."""
    environment = {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "PYTHONPATH")}
    return processes.run([str(SCRIPT), *arguments], cwd=cwd, env=environment, text=True, timeout=120)


def assert_ok(result: Result) -> str:
    """Check that a command succeeded without writing to stderr; return its stdout."""
    assert result.exception is None, f"{result.exception!r}\n{result.output}"
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def parse_table(output: str) -> tuple[list[str], list[list[str]]]:
    """Parse an aligned table (header, a line of dashes, rows), checking that every cell sits in its column.

    Returns:
        The column names and the rows, as the stripped text of each cell.
    """
    lines = output.rstrip("\n").split("\n")
    assert len(lines) >= 2 and re.fullmatch(r"-+( {2}-+)*", lines[1]), output
    spans = [(match.start(), match.end()) for match in re.finditer(r"-+", lines[1])]
    for line in [lines[0], *lines[2:]]:
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert line[end:start].strip() == "", f"misaligned line {line!r} in\n{output}"
    header = [lines[0][start:end].strip() for start, end in spans]
    rows = [[line[start:end].strip() for start, end in spans] for line in lines[2:]]
    for line, row in zip(lines[2:], rows, strict=True):
        assert "  ".join(row).split() == line.split(), f"a cell overflows its column in {line!r}"
    return header, rows


def sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the SQLite file at ``path`` with the sqlite3 module and return its rows."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def database_rows(database: str, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a SQLite path or PostgreSQL URL with SQLAlchemy and return its rows."""
    url = database if "://" in database else f"sqlite:///{database}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def stored_state(database: str) -> list[tuple[Any, ...]]:
    """Return every batch and every run (id, batch, hash, status, attempts, error type) of the database."""
    batches = database_rows(database, "SELECT id, name FROM batches ORDER BY id")
    runs = database_rows(database, "SELECT id, batch_id, spec_hash, status, attempts, error_type FROM runs ORDER BY id")
    return [("batch", *row) for row in batches] + [("run", *row) for row in runs]


def files_below(folder: Path) -> dict[str, bytes]:
    """Return the relative name and bytes of every file below ``folder``."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


def dialect_of(database: str) -> str:
    """Return ``"postgresql"`` for a PostgreSQL URL and ``"sqlite"`` for a path."""
    return "postgresql" if database.startswith("postgresql") else "sqlite"


# -- query -------------------------------------------------------------------------------------------------------

# Seed, size, status and number of the doubling batch, selected with a LIKE holding '%' (and on PostgreSQL with
# '::' casts, which a driver that parses parameters would take for placeholders).
LISTING = {
    "sqlite": (
        "SELECT json_extract(specification, '$.seed') AS seed, json_extract(specification, '$.size') AS size, "
        "status, json_extract(result_json, '$.number') AS number FROM run_details "
        "WHERE batch LIKE 'doub%' ORDER BY run_id"
    ),
    "postgresql": (
        "SELECT (specification->>'seed')::int AS seed, (specification->>'size')::int AS size, status, "
        "(result_json->>'number')::float AS number FROM run_details WHERE batch LIKE 'doub%' ORDER BY run_id"
    ),
}
EXPECTED_LISTING = [
    (spec["seed"], spec["size"], "failed" if spec == FAILING else "completed", number_of(spec))
    for spec in SPECIFICATIONS
]


def test_query_prints_an_aligned_table(database_url: str) -> None:
    """The default output is a header, a line of dashes, and one aligned line per row with the values."""
    build(database_url)
    output = assert_ok(invoke("query", database_url, LISTING[dialect_of(database_url)]))

    header, rows = parse_table(output)
    assert header == ["seed", "size", "status", "number"]
    assert rows == [
        [str(seed), str(size), status, "" if number is None else str(number)]
        for seed, size, status, number in EXPECTED_LISTING
    ]


def test_query_csv(database_url: str) -> None:
    """``--csv`` prints a header and the rows as CSV, with NULL as an empty field."""
    build(database_url)
    output = assert_ok(invoke("query", database_url, LISTING[dialect_of(database_url)], "--csv"))

    parsed = list(csv.reader(io.StringIO(output)))
    assert parsed[0] == ["seed", "size", "status", "number"]
    assert parsed[1:] == [
        [str(seed), str(size), status, "" if number is None else str(number)]
        for seed, size, status, number in EXPECTED_LISTING
    ]


def test_query_json(database_url: str) -> None:
    """``--json`` prints an array of objects keyed by column, with numbers as numbers and NULL as null."""
    build(database_url)
    output = assert_ok(invoke("query", database_url, LISTING[dialect_of(database_url)], "--json"))

    assert json.loads(output) == [
        {"seed": seed, "size": size, "status": status, "number": number}
        for seed, size, status, number in EXPECTED_LISTING
    ]


def test_query_json_keeps_text_as_it_is(sqlite_path: str) -> None:
    """``--json`` prints non-ASCII text as it is (not as ``\\u`` escapes), in the same layout as ever."""
    build(sqlite_path)
    output = assert_ok(invoke("query", sqlite_path, "SELECT 'é ü 😀' AS text, 2 AS n", "--json"))
    assert output == '[\n {\n  "text": "é ü 😀",\n  "n": 2\n }\n]\n'


def test_query_json_prints_numbers_as_numbers(database_url: str) -> None:
    """In ``--json``, computed numbers (an average, the view's ``duration_s``) are JSON numbers on both databases,
    not strings: PostgreSQL returns them as NUMERIC."""
    build(database_url)
    sql = f"SELECT avg(attempts) AS mean_attempts, max(duration_s) AS longest FROM run_details WHERE batch = '{BATCH}'"
    [row] = json.loads(assert_ok(invoke("query", database_url, sql, "--json")))

    assert isinstance(row["mean_attempts"], int | float), row
    assert row["mean_attempts"] == 1
    assert isinstance(row["longest"], int | float), row
    assert row["longest"] >= 0


def test_query_json_of_the_whole_view_keeps_the_stored_specifications(database_url: str) -> None:
    """Every column of ``run_details`` serialises; the specifications read back equal the ones that ran."""
    build(database_url)
    output = assert_ok(invoke("query", database_url, "SELECT * FROM run_details ORDER BY run_id", "--json"))

    objects = json.loads(output)
    assert [row["batch"] for row in objects] == [BATCH] * 6 + ["squares"] * 2
    specifications = [row["specification"] for row in objects]
    if dialect_of(database_url) == "sqlite":  # SQLite returns JSON columns as text
        specifications = [json.loads(text) for text in specifications]
    assert specifications[:6] == SPECIFICATIONS
    assert [row["spec_hash"] for row in objects[:6]] == [specification_hash(spec) for spec in SPECIFICATIONS]
    assert [row["error_type"] for row in objects[:6]] == [None] * 5 + ["ValueError"]


def test_query_with_a_percent_sign_and_casts_on_postgresql(postgres_url: str) -> None:
    """On PostgreSQL, '%' in a LIKE and '::' casts reach the server unchanged."""
    build(postgres_url)
    sql = (
        "SELECT count(*)::text AS n, max((specification->>'seed')::int) AS top "
        "FROM run_details WHERE batch LIKE '%ubl%'"
    )
    output = assert_ok(invoke("query", postgres_url, sql, "--json"))
    assert json.loads(output) == [{"n": "6", "top": 3}]


def test_query_without_url_uses_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the SQL, ``$SMALLAB_DB`` names the database."""
    monkeypatch.chdir(tmp_path)
    build(str(tmp_path / "from_env.db"))
    result = invoke(
        "query", "SELECT count(*) AS n FROM runs", "--csv", env={"SMALLAB_DB": str(tmp_path / "from_env.db")}
    )
    assert assert_ok(result) == "n\n8\n"
    assert not (tmp_path / "smallab.db").exists()


def test_query_without_url_or_environment_uses_smallab_db_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the SQL and no ``$SMALLAB_DB``, the database is ``./smallab.db``."""
    monkeypatch.chdir(tmp_path)
    build(str(tmp_path / "smallab.db"), other=False)
    assert assert_ok(invoke("query", "SELECT count(*) AS n FROM runs", "--csv")) == "n\n6\n"


def test_the_installed_script_queries_the_default_database(tmp_path: Path) -> None:
    """The real console script, with cwd holding ``smallab.db``, answers a query without a URL."""
    build(str(tmp_path / "smallab.db"))
    process = run_script(
        "query", "SELECT batch, count(*) AS n FROM run_details GROUP BY batch ORDER BY batch", cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    assert parse_table(process.stdout) == (["batch", "n"], [[BATCH, "6"], ["squares", "2"]])


WRITES = {
    "delete": "DELETE FROM runs",
    "update": "UPDATE runs SET status = 'pending'",
    "insert": "INSERT INTO batches (name, created_at) VALUES ('sneaky', '2020-01-01 00:00:00')",
    "create": "CREATE TABLE sneaky (x INTEGER)",
    "drop": "DROP TABLE runs",
    "attach": "ATTACH DATABASE '{folder}/attached.db' AS other",
    "vacuum-into": "VACUUM INTO '{folder}/copy.db'",
    "journal-mode": "PRAGMA journal_mode = delete",
    "wal-checkpoint-truncate": "PRAGMA wal_checkpoint(TRUNCATE)",
    "incremental-vacuum": "PRAGMA incremental_vacuum",
}


@pytest.mark.parametrize("statement", list(WRITES.values()), ids=list(WRITES))
def test_query_refuses_a_statement_that_writes_to_sqlite(tmp_path: Path, statement: str) -> None:
    """A writing statement is one ``Error:`` line saying the query is read-only; the file's bytes do not change,
    and ATTACH or VACUUM INTO create no file."""
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "runs.db"
    build(str(path))
    before = path.read_bytes()
    names_before = {file.name for file in folder.iterdir()} - {"runs.db-cores"}  # made if runs were short enough
    assert names_before == {"runs.db", "runs.db-lock"}  # the file writers take turns on

    line = assert_clean_error(invoke("query", str(path), statement.format(folder=folder)))

    assert "read-only" in line
    assert path.read_bytes() == before
    # A read-only SQLite connection to a WAL database may leave the empty -wal and the -shm index behind.
    assert {file.name for file in folder.iterdir()} <= {
        "runs.db",
        "runs.db-wal",
        "runs.db-shm",
        "runs.db-lock",
        "runs.db-cores",
    }
    assert not (folder / "runs.db-wal").exists() or (folder / "runs.db-wal").stat().st_size == 0
    assert not (folder / "attached.db").exists() and not (folder / "copy.db").exists()
    assert sqlite_rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert len(sqlite_rows(path, "SELECT * FROM runs")) == 8


PG_WRITES = {
    "delete": "DELETE FROM runs",
    "update": "UPDATE runs SET status = 'pending'",
    "drop": "DROP TABLE runs CASCADE",
    "insert": "INSERT INTO batches (name, created_at) VALUES ('sneaky', now())",
    # Several statements in one string: they must not get out of the read-only transaction either.
    "commit-then-read-write": "COMMIT; BEGIN READ WRITE; DELETE FROM runs; COMMIT",
    "set-transaction-read-write": "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM runs; COMMIT",
}


@pytest.mark.parametrize("statement", list(PG_WRITES.values()), ids=list(PG_WRITES))
def test_query_refuses_a_statement_that_writes_to_postgresql(postgres_url: str, statement: str) -> None:
    """On PostgreSQL a writing statement is refused with one ``Error:`` line and every row stays."""
    build(postgres_url)
    before = stored_state(postgres_url)
    assert len(before) == 2 + 8

    line = assert_clean_error(invoke("query", postgres_url, statement))

    assert "read-only" in line
    assert stored_state(postgres_url) == before


def test_query_cannot_break_out_of_the_subquery_it_runs_in_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL the statement runs as ``SELECT * FROM (<statement>) AS q``: a statement that closes that
    parenthesis to append a COPY of its own is refused as it stands, and runs nothing."""
    build(postgres_url)
    before = stored_state(postgres_url)
    statement = f"SELECT 1) AS q; COPY runs TO PROGRAM 'touch {tmp_path}/pwned'; SELECT * FROM (SELECT 1"
    assert "syntax error" in assert_clean_error(invoke("query", postgres_url, statement))
    assert list(tmp_path.iterdir()) == []
    assert stored_state(postgres_url) == before


@pytest.mark.parametrize(
    "sql",
    ["SELEC 1", "SELECT * FROM no_such_table", "SELECT nosuchcolumn FROM runs"],
    ids=["syntax", "table", "column"],
)
def test_query_with_bad_sql_is_one_error_line(database_url: str, sql: str) -> None:
    """SQL the database rejects is a clean error naming the problem, and changes nothing."""
    build(database_url)
    before = stored_state(database_url)
    line = assert_clean_error(invoke("query", database_url, sql))
    assert "query failed" in line
    assert stored_state(database_url) == before


@pytest.mark.parametrize("where", ["missing.db", "no/such/folder/missing.db"])
def test_query_on_a_missing_file_is_an_error_and_creates_nothing(tmp_path: Path, where: str) -> None:
    """A path with no database is a clean error naming it, and the query does not create it."""
    line = assert_clean_error(invoke("query", str(tmp_path / where), "SELECT 1"))
    assert str(tmp_path / where) in line
    assert list(tmp_path.iterdir()) == []


def test_query_csv_and_json_together_is_an_error(sqlite_path: str) -> None:
    """``--csv`` and ``--json`` exclude each other."""
    build(sqlite_path)
    line = assert_clean_error(invoke("query", sqlite_path, "SELECT 1", "--csv", "--json"))
    assert "--csv" in line and "--json" in line


# -- runs --------------------------------------------------------------------------------------------------------


def test_runs_lists_hash_prefix_status_attempts_duration_and_specification(database_url: str) -> None:
    """One aligned line per run of the batch, in run order, with a 12-character hash prefix."""
    build(database_url)
    header, rows = parse_table(assert_ok(invoke("runs", database_url, "--batch", BATCH)))

    assert header == ["hash", "status", "attempts", "duration_s", "specification"]
    assert [row[0] for row in rows] == [specification_hash(spec)[:12] for spec in SPECIFICATIONS]
    assert [row[1] for row in rows] == ["failed" if spec == FAILING else "completed" for spec in SPECIFICATIONS]
    assert [row[2] for row in rows] == ["1"] * 6
    assert all(float(row[3]) >= 0 for row in rows)
    assert [row[4] for row in rows] == [f"seed={spec['seed']} size={spec['size']}" for spec in SPECIFICATIONS]


def test_runs_status_filter(database_url: str) -> None:
    """``--status failed`` lists only the failed run."""
    build(database_url)
    _, rows = parse_table(assert_ok(invoke("runs", database_url, "--batch", BATCH, "--status", "failed")))
    assert [(row[0], row[1], row[4]) for row in rows] == [
        (specification_hash(FAILING)[:12], "failed", "seed=3 size=20")
    ]


def test_runs_of_an_unknown_batch_is_an_error_naming_it(sqlite_path: str) -> None:
    """A batch that does not exist is a clean error naming it and the batches there are."""
    build(sqlite_path)
    line = assert_clean_error(invoke("runs", sqlite_path, "--batch", "no-such-batch"))
    assert "'no-such-batch'" in line
    assert BATCH in line


# -- show --------------------------------------------------------------------------------------------------------


def section_after(output: str, label: str) -> str:
    """Return the indented block that follows the line ``label`` in ``show``'s output, dedented."""
    lines = output.splitlines()
    start = lines.index(label) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def field(output: str, name: str) -> str:
    """Return the value of ``name:`` in ``show``'s output."""
    for line in output.splitlines():
        if line.startswith(f"{name}:"):
            return line[len(name) + 1 :].strip()
    raise AssertionError(f"no {name}: line in\n{output}")


def test_show_a_failed_run_prints_its_error_and_traceback(sqlite_path: str) -> None:
    """A failed run shows its status, error type and message, and the stored traceback in full."""
    build(sqlite_path)
    spec_hash = specification_hash(FAILING)
    result = invoke("show", sqlite_path, spec_hash[:8])
    assert result.exception is None and result.exit_code == 0, result.output
    assert result.stderr == ""
    output = result.stdout  # holds the run's stored traceback, so assert_ok's "no Traceback" check does not apply

    assert field(output, "hash") == spec_hash
    assert field(output, "run").endswith(f"of batch '{BATCH}'")
    assert field(output, "status") == "failed"
    assert field(output, "attempts") == "1"
    assert field(output, "error_type") == "ValueError"
    assert field(output, "error_message") == "seed 3 with size 20 fails on purpose"
    assert json.loads(section_after(output, "specification:")) == FAILING
    [(stored_traceback,)] = sqlite_rows(
        Path(sqlite_path), f"SELECT traceback FROM runs WHERE spec_hash = '{spec_hash}'"
    )
    assert section_after(output, "traceback:") == stored_traceback.rstrip()
    assert 'raise ValueError("seed 3 with size 20 fails on purpose")' in output
    assert "ValueError: seed 3 with size 20 fails on purpose" in output
    assert field(output, "result") == "none"


def test_show_a_completed_run_prints_its_json_result(database_url: str) -> None:
    """A completed run with a JSON result shows the result as JSON and no error."""
    build(database_url)
    spec = {"seed": 2, "size": 10}
    output = assert_ok(invoke("show", database_url, specification_hash(spec)[:10]))

    assert field(output, "status") == "completed"
    assert field(output, "error_type") == ""
    assert float(field(output, "duration_s")) >= 0
    assert json.loads(section_after(output, "specification:")) == spec
    assert json.loads(section_after(output, "result:")) == {"number": 4.1}
    assert "traceback:" not in output


def test_show_a_pickle_only_result_does_not_unpickle_it(tmp_path: Path) -> None:
    """The real script says a non-JSON result is stored only as a pickle, and does not load it.

    The pickle names a class of this test module, which a subprocess cannot import: the control below shows that
    unpickling it there fails, so a ``show`` that unpickled would crash.
    """
    path = tmp_path / "runs.db"
    with ExperimentRunner(str(path)) as runner:
        runner.run("opaque", [{"seed": 7}], not_json, show_progress=False)
        assert runner.results("opaque") == [
            {"specification": {"seed": 7}, "result": {"tags": {1, 2}, "marker": OnlyInThisProcess(7)}}
        ]
    [(blob, result_json)] = sqlite_rows(path, "SELECT result, result_json FROM runs")
    assert result_json is None
    control = processes.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=blob,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        timeout=60,
    )
    assert control.returncode != 0, control.stderr
    assert f"No module named '{OnlyInThisProcess.__module__}'".encode() in control.stderr, control.stderr

    process = run_script("show", str(path), specification_hash({"seed": 7})[:6], cwd=tmp_path)

    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stdout + process.stderr
    assert field(process.stdout, "status") == "completed"
    result_line = field(process.stdout, "result")
    assert "stored only as a pickle" in result_line
    assert f"{len(blob)} bytes" in result_line
    assert "OnlyInThisProcess" not in process.stdout


def test_show_an_unknown_prefix_is_an_error(sqlite_path: str) -> None:
    """A prefix no hash starts with is a clean error naming it."""
    build(sqlite_path)
    hashes = {specification_hash(spec) for spec in SPECIFICATIONS}
    unknown = next(prefix for prefix in ("0000", "ffff", "abcd") if not any(h.startswith(prefix) for h in hashes))
    line = assert_clean_error(invoke("show", sqlite_path, unknown))
    assert repr(unknown) in line


def test_show_a_hash_in_two_batches_is_ambiguous_until_batch_is_given(sqlite_path: str) -> None:
    """The same specification in two batches has the same hash: ``show`` lists both, and ``--batch`` picks one."""
    build(sqlite_path, name="first", other=False)
    build(sqlite_path, name="second", other=False)
    spec_hash = specification_hash({"seed": 1, "size": 20})

    line = assert_clean_error(invoke("show", sqlite_path, spec_hash[:12]))
    assert "several runs" in line
    assert "'first'" in line and "'second'" in line
    assert line.count(spec_hash[:16]) == 2

    output = assert_ok(invoke("show", sqlite_path, spec_hash[:12], "--batch", "second"))
    assert field(output, "run").endswith("of batch 'second'")
    assert field(output, "hash") == spec_hash


def test_show_a_one_character_prefix_matching_several_runs_lists_them(sqlite_path: str) -> None:
    """A prefix shared by several runs of one batch is a clean error listing some of them."""
    specifications = [{"seed": seed} for seed in range(20)]  # 20 hashes, 16 first characters: one is shared
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("many", specifications, Square(), show_progress=False)
    hashes = [specification_hash(spec) for spec in specifications]
    first = next(h[0] for h in hashes if sum(other[0] == h[0] for other in hashes) >= 2)
    sharing = [h for h in hashes if h[0] == first]

    line = assert_clean_error(invoke("show", sqlite_path, first))

    assert "several runs" in line
    assert sum(h[:16] in line for h in sharing) == min(len(sharing), 5)


# -- export ------------------------------------------------------------------------------------------------------


def expected_tree(specifications: list[dict[str, Any]]) -> set[str]:
    """Return the files the seed layout writes for these completed specifications."""
    files = {"completed.json"}
    for spec in specifications:
        spec_hash = specification_hash(spec)
        files |= {f"{spec_hash}/specification.json", f"{spec_hash}/{spec_hash}.pkl"}
    return files


COMPLETED = [spec for spec in SPECIFICATIONS if spec != FAILING]


def test_export_writes_the_seed_tree(sqlite_path: str, tmp_path: Path) -> None:
    """``export`` writes one folder per completed run and ``completed.json``, and says where."""
    build(sqlite_path)
    output = assert_ok(invoke("export", sqlite_path, "--batch", BATCH, "--to", str(tmp_path / "out")))

    batch_folder = tmp_path / "out" / BATCH
    assert output == f"exported batch '{BATCH}' to {batch_folder} (seed layout)\n"
    assert set(files_below(batch_folder)) == expected_tree(COMPLETED)
    completed = json.loads((batch_folder / "completed.json").read_text(encoding="utf-8"))
    assert sorted(completed, key=specification_hash) == sorted(COMPLETED, key=specification_hash)
    for spec in COMPLETED:
        spec_hash = specification_hash(spec)
        with (batch_folder / spec_hash / f"{spec_hash}.pkl").open("rb") as file:
            assert pickle.load(file) == {"specification": spec, "result": {"number": number_of(spec)}}


def test_a_second_export_rewrites_nothing(sqlite_path: str, tmp_path: Path) -> None:
    """Exporting again over an unchanged batch leaves every file untouched: an old mtime stays old."""
    build(sqlite_path)
    arguments = ("export", sqlite_path, "--batch", BATCH, "--to", str(tmp_path / "out"))
    assert_ok(invoke(*arguments))
    batch_folder = tmp_path / "out" / BATCH
    files = [path for path in batch_folder.rglob("*") if path.is_file()]
    assert len(files) == 1 + 2 * len(COMPLETED)
    for path in files:
        os.utime(path, (OLD_TIME, OLD_TIME))
    before = files_below(batch_folder)

    assert_ok(invoke(*arguments))

    assert files_below(batch_folder) == before
    assert {path: path.stat().st_mtime for path in files} == dict.fromkeys(files, OLD_TIME)


def test_export_removes_the_folder_of_a_run_that_is_no_longer_completed(sqlite_path: str, tmp_path: Path) -> None:
    """A run that failed when run again loses its folder at the next export; the other runs' files stay as they
    were."""
    specifications = [{"seed": seed} for seed in range(4)]
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("rerun", specifications, lambda spec: {"seed": spec["seed"]}, show_progress=False)
    arguments = ("export", sqlite_path, "--batch", "rerun", "--to", str(tmp_path / "out"))
    assert_ok(invoke(*arguments))
    batch_folder = tmp_path / "out" / "rerun"
    assert set(files_below(batch_folder)) == expected_tree(specifications)
    for path in batch_folder.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD_TIME, OLD_TIME))
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("rerun", specifications, FailOnOdd(), continue_from_last_run=False, show_progress=False)

    assert_ok(invoke(*arguments))

    kept = [{"seed": 0}, {"seed": 2}]
    assert set(files_below(batch_folder)) == expected_tree(kept)
    assert not (batch_folder / specification_hash({"seed": 1})).exists()
    assert json.loads((batch_folder / "completed.json").read_text(encoding="utf-8")) == kept
    for spec in kept:
        for path in (batch_folder / specification_hash(spec)).iterdir():
            assert path.stat().st_mtime == OLD_TIME, path


def test_export_with_an_unknown_layout_is_a_usage_error(sqlite_path: str, tmp_path: Path) -> None:
    """An unknown ``--layout`` is refused by click with exit status 2, before anything is written."""
    build(sqlite_path)
    result = invoke("export", sqlite_path, "--batch", BATCH, "--to", str(tmp_path / "out"), "--layout", "nope")
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert "'nope'" in result.stderr and "--layout" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["a/b", "../escape"])
def test_export_refuses_a_batch_name_with_a_slash(sqlite_path: str, tmp_path: Path, name: str) -> None:
    """A batch whose name holds '/' (one an older smallab-db created: ``run`` refuses such names now) cannot become
    a folder: a clean error, and nothing is written anywhere."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("renamed", [{"seed": 1}], Square(), show_progress=False)
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute("UPDATE batches SET name = ?", (name,))
    connection.close()
    target = tmp_path / "nested" / "out"
    line = assert_clean_error(invoke("export", sqlite_path, "--batch", name, "--to", str(target)))
    assert repr(name) in line
    assert not (tmp_path / "nested").exists()
    assert {path.name for path in tmp_path.iterdir()} - {"runs.db-cores"} == {"runs.db", "runs.db-lock"}


def test_export_of_an_unknown_batch_is_an_error(sqlite_path: str, tmp_path: Path) -> None:
    """Exporting a batch that does not exist is a clean error and creates no folder."""
    build(sqlite_path)
    line = assert_clean_error(invoke("export", sqlite_path, "--batch", "nope", "--to", str(tmp_path / "out")))
    assert "'nope'" in line
    assert not (tmp_path / "out").exists()


# -- import ------------------------------------------------------------------------------------------------------


def rich(specification: dict[str, Any]) -> dict[str, Any]:
    """A result with nested JSON for even seeds, and a set and a tuple (not JSON) for odd ones."""
    seed = specification["seed"]
    if seed % 2:
        return {"seed": seed, "tags": {seed, seed + 1}, "pair": (seed, "x")}
    return {"seed": seed, "metrics": {"loss": seed / 10, "history": [seed, seed + 1]}}


def by_hash(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Index ``runner.results()`` by specification hash."""
    return {specification_hash(run["specification"]): run for run in results}


def exported_tree(database: str, tmp_path: Path, name: str = "original") -> Path:
    """Run batch ``name`` of :func:`rich` with seeds 0 … 3 and export it with the CLI; return the batch folder."""
    with ExperimentRunner(database) as runner:
        runner.run(name, [{"seed": seed} for seed in range(4)], rich, show_progress=False)
    assert_ok(invoke("export", database, "--batch", name, "--to", str(tmp_path / "out")))
    return tmp_path / "out" / name


def test_export_then_import_gives_the_same_results(database_url: str, tmp_path: Path) -> None:
    """Importing an exported tree into a new batch gives the same specifications and results, JSON or not."""
    folder = exported_tree(database_url, tmp_path)

    output = assert_ok(invoke("import", str(folder), "--batch", "copy", database_url))

    assert output.startswith("imported 4 run(s) into batch 'copy' (seed layout); 0 already there, 0 unreadable")
    with ExperimentRunner(database_url) as runner:
        original, copy = runner.results("original"), runner.results("copy")
    assert len(copy) == 4
    assert by_hash(copy) == by_hash(original)
    assert by_hash(copy)[specification_hash({"seed": 1})]["result"]["tags"] == {1, 2}


def test_importing_twice_adds_nothing(sqlite_path: str, tmp_path: Path) -> None:
    """A second import of the same tree reports 0 imported and 4 already there, and adds no row."""
    folder = exported_tree(sqlite_path, tmp_path)
    assert_ok(invoke("import", str(folder), "--batch", "copy", sqlite_path))
    before = stored_state(sqlite_path)

    output = assert_ok(invoke("import", str(folder), "--batch", "copy", sqlite_path))

    assert "imported 0 run(s)" in output
    assert "4 already there" in output
    assert stored_state(sqlite_path) == before


def test_a_truncated_pickle_is_reported_with_its_path_and_skipped(sqlite_path: str, tmp_path: Path) -> None:
    """A damaged ``.pkl`` is named on stderr and skipped; the other runs are imported."""
    folder = exported_tree(sqlite_path, tmp_path)
    damaged_spec = {"seed": 2}
    damaged_hash = specification_hash(damaged_spec)
    damaged = folder / damaged_hash / f"{damaged_hash}.pkl"
    content = damaged.read_bytes()
    damaged.write_bytes(content[: len(content) // 2])

    result = invoke("import", str(folder), "--batch", "copy", sqlite_path)

    assert result.exception is None and result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"skipped {damaged}: ")
    assert len(result.stderr.splitlines()) == 1
    assert "imported 3 run(s)" in result.stdout and "1 unreadable file(s) skipped" in result.stdout
    with ExperimentRunner(sqlite_path) as runner:
        imported = [run["specification"] for run in runner.results("copy")]
    assert sorted(spec["seed"] for spec in imported) == [0, 1, 3]


def test_importing_a_folder_that_is_not_a_tree_is_an_error(sqlite_path: str, tmp_path: Path) -> None:
    """A folder holding no runs is a clean error naming it; no batch is created."""
    build(sqlite_path)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not runs")
    before = stored_state(sqlite_path)

    line = assert_clean_error(invoke("import", str(folder), "--batch", "copy", sqlite_path))

    assert str(folder) in line
    assert stored_state(sqlite_path) == before


def test_importing_a_missing_folder_is_an_error(sqlite_path: str, tmp_path: Path) -> None:
    """A folder that does not exist is a clean error naming it; no batch is created."""
    build(sqlite_path)
    before = stored_state(sqlite_path)
    line = assert_clean_error(invoke("import", str(tmp_path / "absent"), "--batch", "copy", sqlite_path))
    assert str(tmp_path / "absent") in line
    assert stored_state(sqlite_path) == before


def test_importing_over_a_failed_run_completes_it(sqlite_path: str, tmp_path: Path) -> None:
    """A specification that failed in the target batch becomes completed with the imported result."""
    specifications = [{"seed": seed} for seed in range(3)]
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("target", specifications, FailOnOdd(), show_progress=False)  # seed 1 fails
        runner.run("source", specifications, Square(), show_progress=False)
    assert_ok(invoke("export", sqlite_path, "--batch", "source", "--to", str(tmp_path / "out")))

    output = assert_ok(invoke("import", str(tmp_path / "out" / "source"), "--batch", "target", sqlite_path))

    assert "imported 1 run(s)" in output and "2 already there" in output
    with ExperimentRunner(sqlite_path) as runner:
        assert runner.results("target", status="failed") == []
        assert by_hash(runner.results("target")) == by_hash(
            [
                {"specification": {"seed": 0}, "result": {"seed": 0}},
                {"specification": {"seed": 1}, "result": {"square": 1}},
                {"specification": {"seed": 2}, "result": {"seed": 2}},
            ]
        )
    [(status, error_type, result_json)] = sqlite_rows(
        Path(sqlite_path),
        "SELECT status, error_type, result_json FROM runs JOIN batches ON batches.id = runs.batch_id "
        f"WHERE name = 'target' AND spec_hash = '{specification_hash({'seed': 1})}'",
    )
    assert (status, error_type, json.loads(result_json)) == ("completed", None, {"square": 1})


# -- retry -------------------------------------------------------------------------------------------------------


def test_retry_puts_failed_runs_back_to_pending_and_the_next_run_executes_exactly_them(sqlite_path: str) -> None:
    """``retry`` makes the failed runs pending and counts them; a plain ``run`` then executes only those."""
    specifications = [{"seed": seed} for seed in range(5)]
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("odd", specifications, FailOnOdd(), show_progress=False)  # seeds 1 and 3 fail
        runner.run("other", [{"seed": 1}], FailOnOdd(), show_progress=False)

    output = assert_ok(invoke("retry", sqlite_path, "--batch", "odd"))

    assert output == "2 failed run(s) of batch 'odd' are pending again\n"
    statuses = sqlite_rows(
        Path(sqlite_path),
        "SELECT name, status, count(*) FROM runs JOIN batches ON batches.id = runs.batch_id "
        "GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert statuses == [("odd", "completed", 3), ("odd", "pending", 2), ("other", "failed", 1)]

    executed: list[dict[str, Any]] = []

    def recording(specification: dict[str, Any]) -> dict[str, Any]:
        executed.append(specification)
        return {"square": specification["seed"] ** 2}

    with ExperimentRunner(sqlite_path) as runner:
        summary = runner.run("odd", specifications, recording, show_progress=False)
    assert executed == [{"seed": 1}, {"seed": 3}]
    assert (summary.completed, summary.failed, summary.skipped) == ([{"seed": 1}, {"seed": 3}], [], 3)


def test_retry_of_an_unknown_batch_is_an_error(sqlite_path: str) -> None:
    """Retrying a batch that does not exist is a clean error naming it."""
    build(sqlite_path)
    before = stored_state(sqlite_path)
    assert "'nope'" in assert_clean_error(invoke("retry", sqlite_path, "--batch", "nope"))
    assert stored_state(sqlite_path) == before


# -- rm ----------------------------------------------------------------------------------------------------------


def batch_names(path: str) -> list[str]:
    """Return the batch names stored in the SQLite file at ``path``."""
    return [name for (name,) in sqlite_rows(Path(path), "SELECT name FROM batches ORDER BY id")]


def runs_per_batch(path: str) -> dict[str, int]:
    """Return how many runs each batch of the SQLite file at ``path`` has, by joining on ``batch_id``."""
    rows = sqlite_rows(Path(path), "SELECT batch_id, count(*) FROM runs GROUP BY batch_id")
    names = dict(sqlite_rows(Path(path), "SELECT id, name FROM batches"))
    return {names.get(batch_id, f"orphan {batch_id}"): count for batch_id, count in rows}


def test_rm_answered_no_deletes_nothing(sqlite_path: str) -> None:
    """Without ``--yes`` the command asks; answering ``n`` aborts and every row stays."""
    build(sqlite_path)
    before = stored_state(sqlite_path)

    result = invoke("rm", sqlite_path, "--batch", BATCH, input="n\n")

    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"Delete batch '{BATCH}' and its 6 run(s)?" in result.output
    assert "Aborted" in result.output
    assert stored_state(sqlite_path) == before


@pytest.mark.parametrize("how", ["answer-y", "--yes"])
def test_rm_deletes_the_batch_and_its_runs_only(sqlite_path: str, how: str) -> None:
    """Confirmed with ``y`` or ``--yes``, the batch and its runs are gone and the other batch is untouched."""
    build(sqlite_path)
    squares_before = sqlite_rows(
        Path(sqlite_path), "SELECT runs.* FROM runs JOIN batches ON batches.id = runs.batch_id WHERE name = 'squares'"
    )
    arguments = ["rm", sqlite_path, "--batch", BATCH]
    result = invoke(*arguments, input="y\n") if how == "answer-y" else invoke(*arguments, "--yes")

    assert result.exception is None and result.exit_code == 0, result.output
    assert f"deleted batch '{BATCH}' and its 6 run(s)" in result.stdout
    assert batch_names(sqlite_path) == ["squares"]
    assert runs_per_batch(sqlite_path) == {"squares": 2}
    assert (
        sqlite_rows(
            Path(sqlite_path),
            "SELECT runs.* FROM runs JOIN batches ON batches.id = runs.batch_id WHERE name = 'squares'",
        )
        == squares_before
    )


def test_rm_of_an_unknown_batch_is_an_error(sqlite_path: str) -> None:
    """Removing a batch that does not exist is a clean error naming it, and deletes nothing."""
    build(sqlite_path)
    before = stored_state(sqlite_path)
    assert "'nope'" in assert_clean_error(invoke("rm", sqlite_path, "--batch", "nope", "--yes"))
    assert stored_state(sqlite_path) == before
