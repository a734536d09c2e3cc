"""``smallab-db runs`` shows the keys that tell a batch's runs apart (``--full``: whole specifications), and ``status``,
``runs`` and ``show`` print ``--json`` in the shapes of the Python API, on both databases."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result

from smallab_db import ExperimentRunner, SpecificationGenerator, specification_hash
from smallab_db.cli import main
from smallab_db.database import resolve_url
from smallab_db.schema import STATUSES

# A sweep as users write them: long constant values, two keys that vary.
GRID = {
    "model": "resnet50-pretrained-on-imagenet-with-a-long-name",
    "optimizer": {"name": "adam", "betas": [0.9, 0.999]},
    "lr": [0.1, 0.01],
    "seed": [1, 2],
}
SWEEP = SpecificationGenerator().generate(GRID)
FAILING = {**SWEEP[0], "lr": 0.1, "seed": 2}


def train(specification: dict[str, Any]) -> dict[str, Any]:
    """Fails for lr 0.1 with seed 2; returns JSON, or a set (not JSON) for lr 0.01 with seed 2."""
    if specification == FAILING:
        raise ValueError("diverged")
    if specification["seed"] == 2:
        return {"tags": {specification["seed"]}}
    return {"accuracy": specification["lr"] * 10, "curve": [1, 2]}


def build(database: str) -> None:
    """Batch ``sweep`` (4 runs: 2 completed with JSON, 1 with a pickle only, 1 failed) and batch ``single``."""
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run("sweep", SWEEP, train, show_progress=False)
        runner.run("single", [{"seed": 7}], dict, show_progress=False)


def invoke(*arguments: str) -> Result:
    """Run the click group in-process, without ``$SMALLAB_DB``; check that the command succeeded."""
    result = CliRunner().invoke(main, list(arguments), env={"SMALLAB_DB": None})
    assert result.exception is None and result.exit_code == 0, result.output
    return result


def stored_rows(database: str) -> list[tuple[Any, ...]]:
    """Every stored row, to compare before and after."""
    engine = sqlalchemy.create_engine(resolve_url(database))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM runs ORDER BY id")]
    finally:
        engine.dispose()


# -- runs: the keys that vary ------------------------------------------------------------------------------------


def test_runs_shows_the_keys_that_vary_and_then_the_keys_that_do_not(sqlite_path: str) -> None:
    """In a sweep whose long constant values would fill the column, each row shows ``lr`` and ``seed``, which tell
    the runs apart; a last line gives the constant keys once."""
    build(sqlite_path)

    lines = invoke("runs", sqlite_path, "--batch", "sweep").stdout.splitlines()

    assert lines[0].split() == ["hash", "status", "attempts", "duration_s", "specification"]
    rows = [line.split() for line in lines[2:-1]]
    assert [row[0] for row in rows] == [specification_hash(spec)[:12] for spec in SWEEP]
    assert [row[4:] for row in rows] == [[f"lr={spec['lr']}", f"seed={spec['seed']}"] for spec in SWEEP]
    assert lines[-1] == (
        'the same in every run: model=resnet50-pretrained-on-imagenet-with-a-long-name optimizer={"betas": [0.9, '
        '0.999], "name": "adam"} (--full shows whole specifications)'
    )


def test_runs_keys_vary_over_the_whole_batch_even_when_filtered(sqlite_path: str) -> None:
    """``--status failed`` lists the one failed run, still by the keys that vary across the batch."""
    build(sqlite_path)
    lines = invoke("runs", sqlite_path, "--batch", "sweep", "--status", "failed").stdout.splitlines()
    assert [line.split()[4:] for line in lines[2:-1]] == [["lr=0.1", "seed=2"]]


def test_runs_full_shows_each_whole_specification(sqlite_path: str) -> None:
    """``--full``: every row holds its whole specification as JSON, and no line is added."""
    build(sqlite_path)
    lines = invoke("runs", sqlite_path, "--batch", "sweep", "--full").stdout.splitlines()
    assert len(lines) == 2 + len(SWEEP)
    assert [json.loads(line.split(None, 4)[4]) for line in lines[2:]] == SWEEP


def test_runs_of_a_batch_of_one_shows_its_whole_specification(sqlite_path: str) -> None:
    """No key varies in a batch of one run: its whole specification is shown, and no extra line."""
    build(sqlite_path)
    lines = invoke("runs", sqlite_path, "--batch", "single").stdout.splitlines()
    assert len(lines) == 3 and lines[2].split()[4:] == ["seed=7"]


def test_a_key_only_some_runs_have_varies(sqlite_path: str) -> None:
    """A key that some specifications lack tells runs apart too."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("mixed", [{"a": 1}, {"a": 1, "dropout": 0.5}], dict, show_progress=False)
    lines = invoke("runs", sqlite_path, "--batch", "mixed").stdout.splitlines()
    assert [line.split()[4:] for line in lines[2:-1]] == [[], ["dropout=0.5"]]
    assert lines[-1].startswith("the same in every run: a=1 ")


# -- --json ------------------------------------------------------------------------------------------------------


def test_status_json_gives_the_counts_per_status_of_every_batch(database_url: str) -> None:
    """``status --json``: one object per batch, in creation order, with a count for every status."""
    build(database_url)
    counts = json.loads(invoke("status", database_url, "--json").stdout)
    assert counts == [
        {"batch": "sweep", "pending": 0, "running": 0, "completed": 3, "failed": 1},
        {"batch": "single", "pending": 0, "running": 0, "completed": 1, "failed": 0},
    ]
    assert all(list(record) == ["batch", *STATUSES] for record in counts)


def test_status_json_of_an_empty_database_is_an_empty_array(sqlite_path: str) -> None:
    """No batch: an empty array, which a script can still parse."""
    invoke("migrate", sqlite_path)
    assert json.loads(invoke("status", sqlite_path, "--json").stdout) == []


def as_time(text: str) -> datetime:
    """An ISO 8601 time ``--json`` printed, which must carry the UTC offset."""
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0), text
    return parsed


def test_runs_json_gives_each_run_as_the_python_api_does(database_url: str) -> None:
    """``runs --json``: one object per run, in run order; specification and result as ``runner.results(name, None)``
    gives them where the result is JSON, and the pickle's size where it is not; the status, attempts, times and
    duration as stored."""
    build(database_url)
    with ExperimentRunner(database_url) as runner:
        results = runner.results("sweep", None)

    records = json.loads(invoke("runs", database_url, "--batch", "sweep", "--json").stdout)

    assert [record["specification"] for record in records] == [item["specification"] for item in results] == SWEEP
    for record, item in zip(records, results, strict=True):
        assert list(record) == [
            "run_id", "spec_hash", "status", "attempts", "started_at", "finished_at", "duration_s", "error_type",
            "specification", "result", "result_pickle_bytes",
        ]  # fmt: skip
        assert record["spec_hash"] == specification_hash(record["specification"])
        assert record["attempts"] == 1
        started, finished = as_time(record["started_at"]), as_time(record["finished_at"])
        assert record["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=1e-6)
        if record["status"] == "failed":
            assert (record["error_type"], record["result"], item["result"]) == ("ValueError", None, None)
        elif record["result"] is None:  # the set: a pickle only
            assert item["result"] == {"tags": {2}} and record["result_pickle_bytes"] > 0
        else:
            assert record["result"] == item["result"] and record["result_pickle_bytes"] is None
    assert [record["status"] for record in records] == ["completed", "failed", "completed", "completed"]


def test_runs_json_filters_by_status(database_url: str) -> None:
    """``--status`` selects the runs ``--json`` prints."""
    build(database_url)
    records = json.loads(invoke("runs", database_url, "--batch", "sweep", "--status", "failed", "--json").stdout)
    assert [record["specification"] for record in records] == [FAILING]


def test_show_json_gives_one_run_with_its_details(database_url: str) -> None:
    """``show --json``: the fields of ``runs --json`` and the batch, creation time, host, pid, error message and
    traceback."""
    build(database_url)
    record = json.loads(invoke("show", database_url, specification_hash(FAILING)[:10], "--json").stdout)

    listed = json.loads(invoke("runs", database_url, "--batch", "sweep", "--status", "failed", "--json").stdout)[0]
    assert {key: record[key] for key in listed} == listed
    assert record["batch"] == "sweep" and record["error_message"] == "diverged"
    assert "ValueError: diverged" in record["traceback"] and isinstance(record["pid"], int) and record["host"]
    assert as_time(record["created_at"]) <= as_time(record["started_at"])


def test_show_json_refuses_what_show_refuses(sqlite_path: str) -> None:
    """An unknown prefix is the same clean error with ``--json``."""
    build(sqlite_path)
    result = CliRunner().invoke(main, ["show", sqlite_path, "0000000000", "--json"], env={"SMALLAB_DB": None})
    assert "has a hash starting with '0000000000'" in assert_clean_error(result)


def test_json_commands_change_nothing(sqlite_path: str) -> None:
    """The three reading commands leave every row as it was."""
    build(sqlite_path)
    before = stored_rows(sqlite_path)
    invoke("status", sqlite_path, "--json")
    invoke("runs", sqlite_path, "--batch", "sweep", "--json")
    invoke("show", sqlite_path, specification_hash(SWEEP[0])[:12], "--json")
    assert stored_rows(sqlite_path) == before
