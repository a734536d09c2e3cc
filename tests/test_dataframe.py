"""runner.dataframe: one pandas row per run, with flattened specification and result columns."""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import processes
import pytest
import sqlalchemy

import smallab_db
from smallab_db import ExperimentRunner, UsageError, specification_hash

pandas = pytest.importorskip("pandas")

BATCH = "frame"
FINISHED = [{"seed": seed, "cfg": {"lr": seed / 10, "depth": 2}} for seed in range(4)]  # seed 3 fails
UNFINISHED = [{"seed": seed, "cfg": {"lr": seed / 10, "depth": 2}} for seed in (4, 5)]  # interrupted: pending
RUN_COLUMNS = ["status", "duration_s", "attempts", "spec_hash", "error_type"]


def learn(specification: dict[str, Any]) -> dict[str, Any]:
    """A result with nested metrics and a set (not JSON); seed 3 raises ValueError."""
    seed = specification["seed"]
    if seed == 3:
        raise ValueError("seed 3 diverged")
    return {"metrics": {"loss": 1 / (seed + 1), "acc": seed / 4}, "n": seed, "tags": {seed, "x"}}


def interrupt(specification: dict[str, Any]) -> dict[str, Any]:
    """Stand for Ctrl-C: the runner stores nothing for this run and returns its claims to pending."""
    raise KeyboardInterrupt


def missing(value: Any) -> bool:
    """Tell whether a DataFrame cell holds no value (None or NaN)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


@pytest.fixture
def runner(database_url: str) -> Iterator[ExperimentRunner]:
    """A runner whose batch BATCH has three completed runs, one failed run and two pending runs."""
    with ExperimentRunner(database_url) as experiment_runner:
        experiment_runner.on_specification_failure(None)
        summary = experiment_runner.run(BATCH, FINISHED, learn, show_progress=False)
        assert len(summary.completed) == 3 and summary.failed == [FINISHED[3]]
        with pytest.raises(KeyboardInterrupt):
            experiment_runner.run(BATCH, UNFINISHED, interrupt, show_progress=False)
        yield experiment_runner


def stored_runs(database: str) -> list[tuple[int, str, str, int]]:
    """Return ``(id, spec_hash, status, attempts)`` of every run of BATCH, read with SQLAlchemy."""
    url = database if "://" in database else f"sqlite:///{database}"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT runs.id, spec_hash, status, attempts FROM runs JOIN batches ON batches.id = runs.batch_id "
                f"WHERE batches.name = '{BATCH}' ORDER BY runs.id"
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def test_one_row_per_run_indexed_by_run_id(runner: ExperimentRunner, database_url: str) -> None:
    """The index is ``run_id`` and holds the ids of the batch's runs, in order, with their hashes and statuses."""
    frame = runner.dataframe(BATCH)

    stored = stored_runs(database_url)
    assert len(stored) == 6
    assert frame.index.name == "run_id"
    assert list(frame.index) == [run_id for run_id, _, _, _ in stored]
    assert list(frame["spec_hash"]) == [spec_hash for _, spec_hash, _, _ in stored]
    assert list(frame["spec_hash"]) == [specification_hash(spec) for spec in FINISHED + UNFINISHED]
    assert list(frame["status"]) == ["completed"] * 3 + ["failed", "pending", "pending"]
    assert list(frame["status"]) == [status for _, _, status, _ in stored]
    assert list(frame["attempts"]) == [attempts for _, _, _, attempts in stored]


def test_columns_are_flattened_with_dots(runner: ExperimentRunner) -> None:
    """Nested specification and result keys become ``spec.cfg.lr`` and ``result.metrics.loss`` columns."""
    frame = runner.dataframe(BATCH)

    assert set(frame.columns) == {
        "spec.seed",
        "spec.cfg.lr",
        "spec.cfg.depth",
        "result.metrics.loss",
        "result.metrics.acc",
        "result.n",
        "result.tags",
        *RUN_COLUMNS,
    }
    assert list(frame["spec.seed"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["spec.cfg.lr"]) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert list(frame["spec.cfg.depth"]) == [2] * 6
    assert list(frame["result.metrics.loss"][:3]) == pytest.approx([1.0, 0.5, 1 / 3])


def test_values_equal_runner_results(runner: ExperimentRunner) -> None:
    """Every completed row holds the values of ``runner.results()``, including the unpickled set."""
    frame = runner.dataframe(BATCH)
    completed = frame[frame["status"] == "completed"]

    results = runner.results(BATCH)
    assert len(results) == len(completed) == 3
    for (_, row), run in zip(completed.iterrows(), results, strict=True):
        specification, result = run["specification"], run["result"]
        assert row["spec_hash"] == specification_hash(specification)
        assert row["spec.seed"] == specification["seed"]
        assert row["spec.cfg.lr"] == specification["cfg"]["lr"]
        assert row["result.metrics.loss"] == result["metrics"]["loss"]
        assert row["result.metrics.acc"] == result["metrics"]["acc"]
        assert row["result.n"] == result["n"]
        assert row["result.tags"] == result["tags"]
        assert isinstance(row["result.tags"], set)


def test_failed_run_has_no_results_and_its_error_type(runner: ExperimentRunner) -> None:
    """The failed run's result columns are empty and ``error_type`` is the exception's type; others have none."""
    frame = runner.dataframe(BATCH)
    failed = frame[frame["status"] == "failed"]

    assert len(failed) == 1
    row = failed.iloc[0]
    assert row["spec.seed"] == 3
    assert row["error_type"] == "ValueError"
    assert row["attempts"] == 1
    for column in ("result.metrics.loss", "result.metrics.acc", "result.n", "result.tags"):
        assert missing(row[column]), column
    assert all(missing(value) for value in frame.loc[frame["status"] != "failed", "error_type"])


def test_duration_is_set_for_finished_runs_only(runner: ExperimentRunner) -> None:
    """``duration_s`` is a non-negative number for completed and failed runs, and empty for pending ones."""
    frame = runner.dataframe(BATCH)

    finished = frame[frame["status"].isin(["completed", "failed"])]["duration_s"]
    assert len(finished) == 4
    assert all(not missing(value) and value >= 0 for value in finished)
    pending = frame[frame["status"] == "pending"]["duration_s"]
    assert len(pending) == 2
    assert all(missing(value) for value in pending)


def test_unknown_batch_raises_usage_error(runner: ExperimentRunner) -> None:
    """A batch that does not exist raises UsageError naming it."""
    with pytest.raises(UsageError, match="no-such-batch"):
        runner.dataframe("no-such-batch")


def test_missing_dependency_error_is_public() -> None:
    """``smallab_db.MissingDependencyError`` is importable from the package, a SmallabError and an ImportError."""
    error_class = getattr(smallab_db, "MissingDependencyError", None)
    assert error_class is not None, "smallab_db does not export MissingDependencyError"
    assert issubclass(error_class, smallab_db.SmallabError)
    assert issubclass(error_class, ImportError)
    assert "MissingDependencyError" in smallab_db.__all__


WITHOUT_PANDAS = textwrap.dedent(
    """
    import json
    import sys

    sys.modules["pandas"] = None  # any `import pandas` now raises ImportError, as when it is not installed
    try:
        import pandas  # noqa: F401
    except ImportError:
        blocked = True
    else:
        blocked = False

    import smallab_db
    from smallab_db import ExperimentRunner

    runner = ExperimentRunner("runs.db")
    runner.run("b", [{"seed": 1}], lambda spec: {"seed": spec["seed"]}, show_progress=False)
    try:
        runner.dataframe("b")
    except Exception as error:
        report = {
            "blocked": blocked,
            "type": type(error).__name__,
            "is_public_class": type(error) is getattr(smallab_db, "MissingDependencyError", None),
            "is_smallab_error": isinstance(error, smallab_db.SmallabError),
            "is_import_error": isinstance(error, ImportError),
            "message": str(error),
        }
    else:
        report = {"blocked": blocked, "type": None}
    print(json.dumps(report))
    """
)


def test_without_pandas_dataframe_raises_missing_dependency_error(tmp_path: Path) -> None:
    """In a fresh interpreter where pandas cannot be imported, ``dataframe`` raises MissingDependencyError saying
    how to install it."""
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    process = processes.run(
        [sys.executable, "-c", WITHOUT_PANDAS], cwd=tmp_path, env=environment, text=True, timeout=120
    )
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout.splitlines()[-1])
    assert report["blocked"] is True
    assert report["type"] == "MissingDependencyError", report
    assert report["is_smallab_error"] and report["is_import_error"], report
    assert "pip install 'smallab-db[pandas]'" in report["message"]
    assert report["is_public_class"], "the error is not smallab_db.MissingDependencyError (not exported)"
