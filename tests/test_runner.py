"""The runner's API and behaviour: hooks, resume, failures, results and parallel runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import logging
import os
import pickle
import sqlite3
import weakref
from typing import Any

import joblib
import pytest
import sqlalchemy as sa
from workloads import FailOnOdd, NotADict, RaisesUnpicklable, ReportsPid, Square, Unpicklable

from smallab_db import (
    ExperimentError,
    ExperimentRunner,
    ResultNotStoredError,
    UsageError,
    specification_hash,
)
from smallab_db.schema import runs

SEEDS = [{"seed": seed} for seed in range(6)]


def rows(runner: ExperimentRunner) -> list[Any]:
    """All run rows, in id order."""
    with runner.engine.connect() as connection:
        return list(connection.execute(sa.select(runs).order_by(runs.c.id)))


def test_run_stores_every_specification_and_result(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    summary = runner.run("squares", SEEDS, Square(), show_progress=False)
    assert summary.completed == SEEDS
    assert (summary.failed, summary.exceptions, summary.skipped) == ([], [], 0)
    assert runner.results("squares") == [
        {"specification": spec, "result": {"square": spec["seed"] ** 2}} for spec in SEEDS
    ]
    for row, spec in zip(rows(runner), SEEDS, strict=True):
        assert row.spec_hash == specification_hash(spec)
        assert row.status == "completed"
        assert row.attempts == 1
        assert row.specification == spec
        assert pickle.loads(row.result) == {"square": spec["seed"] ** 2}
        assert row.result_json == {"square": spec["seed"] ** 2}
        assert row.host and row.pid == os.getpid()
        assert row.created_at <= row.started_at <= row.finished_at
        assert row.lease_expires_at is None
    runner.close()


def test_a_plain_callable_is_an_experiment(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    summary = runner.run("callable", SEEDS[:2], lambda spec: {"double": spec["seed"] * 2}, show_progress=False)
    assert len(summary.completed) == 2
    assert runner.results("callable")[1]["result"] == {"double": 2}


@pytest.mark.parametrize("experiment", [42, "main", Square])
def test_something_that_is_not_an_experiment_is_refused(sqlite_path: str, experiment: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(ExperimentError, match="experiment must be"):
        runner.run("bad", SEEDS, experiment, show_progress=False)
    assert runner.store.batch_counts() == []


def test_hooks_are_called_with_specifications_results_and_exceptions(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    calls: dict[str, list[Any]] = {"complete": [], "failure": [], "batch": [], "batch_failure": []}
    runner.on_specification_complete(lambda spec, result: calls["complete"].append((spec, result)))
    runner.on_specification_failure(lambda error, spec: calls["failure"].append((str(error), spec)))
    runner.on_batch_complete(lambda specs: calls["batch"].append(specs))
    runner.on_batch_failure(lambda errors, specs: calls["batch_failure"].append(([str(e) for e in errors], specs)))
    summary = runner.run("hooks", SEEDS, FailOnOdd(), show_progress=False)
    even, odd = SEEDS[0::2], SEEDS[1::2]
    assert calls["complete"] == [(spec, spec) for spec in even]
    assert calls["failure"] == [(f"odd seed {spec['seed']}", spec) for spec in odd]
    assert calls["batch"] == [even]
    assert calls["batch_failure"] == [([f"odd seed {spec['seed']}" for spec in odd], odd)]
    assert summary.failed == odd
    assert [type(error) for error in summary.exceptions] == [ValueError] * len(odd)


def test_hooks_can_be_removed_and_default_failure_hook_prints(
    sqlite_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = ExperimentRunner(sqlite_path)
    completed: list[Any] = []
    runner.on_specification_complete(lambda spec, result: completed.append(spec))
    runner.on_specification_complete(None)
    runner.run("printing", SEEDS[:2], FailOnOdd(), show_progress=False)
    assert completed == []
    assert 'specification {"seed": 1} failed with ValueError: odd seed 1' in capsys.readouterr().err


def test_a_hook_that_raises_is_reported_once_and_the_batch_goes_on(
    sqlite_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    runner = ExperimentRunner(sqlite_path)

    def broken_hook(spec: dict[str, Any], result: dict[str, Any]) -> None:
        raise RuntimeError("hook is broken")

    runner.on_specification_complete(broken_hook)
    with caplog.at_level(logging.ERROR, logger="smallab_db"):
        summary = runner.run("hooked", SEEDS, Square(), show_progress=False)
    assert summary.completed == SEEDS
    reports = [record for record in caplog.records if "broken_hook" in record.getMessage()]
    assert len(reports) == 1
    assert len(runner.results("hooked")) == len(SEEDS)


def test_failures_store_type_message_and_traceback(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    runner.run("failing", SEEDS[:2], FailOnOdd(), show_progress=False)
    completed, failed = rows(runner)
    assert completed.status == "completed" and completed.error_type is None
    assert failed.status == "failed"
    assert failed.error_type == "ValueError"
    assert failed.error_message == "odd seed 1"
    assert "Traceback" in failed.traceback and 'raise ValueError(f"odd seed' in failed.traceback
    assert failed.result is None and failed.result_json is None
    assert failed.finished_at >= failed.started_at


def test_unpicklable_and_non_dict_results_are_failures_not_crashes(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    summary = runner.run("unpicklable", SEEDS[:1], Unpicklable(), show_progress=False)
    assert summary.failed == SEEDS[:1]
    assert isinstance(summary.exceptions[0], ExperimentError)
    assert "cannot be pickled" in str(summary.exceptions[0])
    summary = runner.run("not-a-dict", SEEDS[:1], NotADict(), show_progress=False)
    assert "main must return a dict, but returned list" in str(summary.exceptions[0])
    assert [row.error_type for row in rows(runner)] == ["smallab_db.errors.ExperimentError"] * 2


def test_results_that_are_not_json_keep_result_json_null(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("sets", SEEDS[:1], lambda spec: {"values": {1, 2}, "nan": float("nan")}, show_progress=False)
    row = rows(runner)[0]
    assert row.result_json is None
    assert pickle.loads(row.result)["values"] == {1, 2}


def test_resume_skips_completed_and_reruns_failed(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    runner.run("resume", SEEDS, FailOnOdd(), show_progress=False)
    summary = runner.run("resume", SEEDS, Square(), show_progress=False)
    assert summary.skipped == 3
    assert summary.completed == SEEDS[1::2]
    by_seed = {row.specification["seed"]: row for row in rows(runner)}
    assert [by_seed[seed].attempts for seed in range(6)] == [1, 2, 1, 2, 1, 2]
    assert all(row.status == "completed" for row in by_seed.values())
    assert by_seed[1].error_type is None and pickle.loads(by_seed[1].result) == {"square": 1}


def test_continue_from_last_run_false_reruns_everything(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("again", SEEDS, Square(), show_progress=False)
    summary = runner.run("again", SEEDS, Square(), continue_from_last_run=False, show_progress=False)
    assert summary.completed == SEEDS and summary.skipped == 0
    assert [row.attempts for row in rows(runner)] == [2] * len(SEEDS)


def test_a_duplicate_in_the_list_runs_once(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    executed: list[Any] = []

    def record(spec: dict[str, Any]) -> dict[str, Any]:
        executed.append(spec)
        return {}

    summary = runner.run("dupes", [{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1, "b": 2}], record, show_progress=False)
    assert executed == [{"a": 1, "b": 2}]
    assert summary.completed == [{"a": 1, "b": 2}]
    assert len(rows(runner)) == 1


def test_batches_are_independent(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("one", SEEDS[:2], Square(), show_progress=False)
    summary = runner.run("two", SEEDS[:2], Square(), show_progress=False)
    assert summary.completed == SEEDS[:2] and summary.skipped == 0
    assert dict(runner.store.batch_counts()) == {"one": {"completed": 2}, "two": {"completed": 2}}


def test_results_filters_by_status_and_refuses_unknown_batches(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    runner.run("filter", SEEDS[:4], FailOnOdd(), show_progress=False)
    assert [run["specification"] for run in runner.results("filter", status="failed")] == [SEEDS[1], SEEDS[3]]
    assert len(runner.results("filter", status=None)) == 4
    with pytest.raises(UsageError, match="no batch named 'missing'.*filter"):
        runner.results("missing")
    with pytest.raises(UsageError, match="status must be one of"):
        runner.results("filter", status="done")


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4"])
def test_bad_parallelism_is_refused(sqlite_path: str, bad: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(UsageError, match=f"num_parallel must be a positive int.*{bad!r}"):
        runner.run("p", SEEDS, Square(), num_parallel=bad, show_progress=False)


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 256])
def test_bad_batch_names_are_refused(sqlite_path: str, name: Any) -> None:
    with pytest.raises(UsageError, match="batch name"):
        ExperimentRunner(sqlite_path).run(name, SEEDS, Square(), show_progress=False)


def test_parallel_processes_store_every_result_and_use_workers(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    hook_pids: set[int] = set()
    runner.on_specification_complete(lambda spec, result: hook_pids.add(os.getpid()))
    specifications = [{"seed": seed, "sleep": 0.05} for seed in range(12)]
    summary = runner.run("loky", specifications, ReportsPid(), num_parallel=2, show_progress=False)
    assert sorted(spec["seed"] for spec in summary.completed) == list(range(12))
    pids = {run["result"]["pid"] for run in runner.results("loky")}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2  # one worker may take every task while the other still starts
    assert hook_pids == {os.getpid()}  # hooks run in the calling process
    summary = runner.run("loky-failures", SEEDS, FailOnOdd(), num_parallel=2, show_progress=False)
    assert sorted(spec["seed"] for spec in summary.failed) == [1, 3, 5]
    assert all(isinstance(error, ValueError) for error in summary.exceptions)
    summary = runner.run("loky-unpicklable", SEEDS[:2], Unpicklable(), num_parallel=2, show_progress=False)
    assert len(summary.failed) == 2 and "cannot be pickled" in str(summary.exceptions[0])


def test_threading_backend_and_parallel_config_are_honoured(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    specifications = [{"seed": seed, "sleep": 0.02} for seed in range(8)]
    runner.run("threads", specifications, ReportsPid(), num_parallel=2, backend="threading", show_progress=False)
    assert {run["result"]["pid"] for run in runner.results("threads")} == {os.getpid()}
    with joblib.parallel_config(backend="threading"):
        runner.run("configured", specifications, ReportsPid(), num_parallel=2, show_progress=False)
    assert {run["result"]["pid"] for run in runner.results("configured")} == {os.getpid()}


def test_an_exception_that_cannot_travel_back_arrives_as_text(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    summary = runner.run("remote", SEEDS[:1], RaisesUnpicklable(), num_parallel=2, show_progress=False)
    assert type(summary.exceptions[0]).__name__ == "RemoteExperimentError"
    assert "UnpicklableError" in str(summary.exceptions[0]) and "carries a lock" in str(summary.exceptions[0])
    assert rows(runner)[0].error_message == "carries a lock"


def test_progress_bar_counts_finished_runs(sqlite_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    runner.run("progress", SEEDS, FailOnOdd(), show_progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "completed=3 failed=3" in err
    runner.run("quiet", SEEDS, FailOnOdd(), show_progress=False)
    assert "quiet" not in capsys.readouterr().err


def test_export_folder_defaults_as_in_smallab(sqlite_path: str, tmp_path: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    assert runner.get_batch_save_folder("b") == os.path.join("experiment_runs", "b")
    runner.set_experiment_folder(tmp_path / "out")
    assert runner.get_batch_save_folder("b") == str(tmp_path / "out" / "b")


def test_default_database_is_smallab_db_or_the_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMALLAB_DB", raising=False)
    ExperimentRunner().run("default", SEEDS[:1], Square(), show_progress=False)
    assert (tmp_path / "smallab.db").is_file()
    monkeypatch.setenv("SMALLAB_DB", str(tmp_path / "from-env.db"))
    runner = ExperimentRunner()
    runner.run("env", SEEDS[:1], Square(), show_progress=False)
    assert runner.url.database == str(tmp_path / "from-env.db")
    assert (tmp_path / "from-env.db").is_file()


def test_json_result_column_is_queryable_with_sql(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("sql", SEEDS, Square(), show_progress=False)
    with runner.engine.connect() as connection:
        total = connection.exec_driver_sql(
            "SELECT sum(json_extract(result_json, '$.square')) FROM runs WHERE status = 'completed'"
        ).scalar_one()
    assert total == sum(seed**2 for seed in range(6))


@pytest.mark.parametrize("backend", ["nope", 42])
def test_an_unknown_backend_is_refused_before_anything_is_written(sqlite_path: str, backend: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    with pytest.raises(UsageError, match=f"backend must be None or a joblib backend.*{backend!r}"):
        runner.run("b", SEEDS, Square(), num_parallel=2, backend=backend, show_progress=False)
    with pytest.raises(UsageError, match="continue_from_last_run must be True or False, but got 'no'"):
        runner.run("b", SEEDS, Square(), continue_from_last_run="no", show_progress=False)  # type: ignore[arg-type]
    assert runner.store.batch_counts() == []


def test_failures_do_not_keep_the_frames_of_main_alive(sqlite_path: str) -> None:
    held: list[weakref.ref[Any]] = []

    class Payload:
        """Stands for a large array that main holds in a local variable when it raises."""

    def fails(specification: dict[str, Any]) -> dict[str, Any]:
        payload = Payload()
        held.append(weakref.ref(payload))
        raise ValueError(f"failed holding {len(held)} payload(s)")

    runner = ExperimentRunner(sqlite_path)
    runner.on_specification_failure(None)
    summary = runner.run("frames", SEEDS, fails, show_progress=False)
    gc.collect()
    assert len(summary.exceptions) == len(SEEDS) == len(held)
    assert all(reference() is None for reference in held)
    cause = summary.exceptions[0].__cause__
    assert cause is not None and "in fails" in str(cause) and "ValueError" in str(cause)  # the traceback, as text


def test_an_outcome_the_database_refuses_is_stored_as_a_failure(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.engine.dispose()
    # A real refusal: SQLite's own limit on the size of a value, lowered on this engine's connections.
    sa.event.listen(
        runner.engine, "connect", lambda connection, _: connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)
    )
    runner.on_specification_failure(None)
    specifications = [{"seed": seed, "size": size} for seed, size in enumerate([10, 500_000, 20])]
    summary = runner.run("limits", specifications, lambda spec: {"blob": "x" * spec["size"]}, show_progress=False)
    assert summary.completed == [specifications[0], specifications[2]]
    assert summary.failed == [specifications[1]]
    assert isinstance(summary.exceptions[0], ResultNotStoredError)
    stored = {row.specification["seed"]: row for row in rows(runner)}
    assert stored[1].status == "failed" and stored[1].error_type == "smallab_db.errors.ResultNotStoredError"
    assert "too big" in stored[1].error_message
    assert stored[0].status == stored[2].status == "completed"


def test_import_folder_reads_an_exported_tree_back(sqlite_path: str, tmp_path: Any) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("source", SEEDS, Square(), show_progress=False)
    folder = runner.export("source", tmp_path / "tree")
    report = runner.import_folder(folder, "copy")
    assert (report.layout, report.imported, report.already_present, report.unreadable) == ("seed", 6, 0, [])
    assert runner.import_folder(folder, "copy").imported == 0
    by_seed = lambda runs: sorted(runs, key=lambda run: run["specification"]["seed"])  # noqa: E731
    assert by_seed(runner.results("copy")) == by_seed(runner.results("source"))
    with pytest.raises(UsageError, match="batch name"):
        runner.import_folder(folder, "")


def test_a_hook_failing_three_times_in_a_row_is_not_called_again(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    calls: list[int] = []

    def unreachable_mail_server(spec: dict[str, Any], result: dict[str, Any]) -> None:
        calls.append(spec["seed"])
        raise ConnectionRefusedError("mail server down")

    flaky_calls: list[int] = []

    def fails_every_other_time(spec: dict[str, Any], result: dict[str, Any]) -> None:
        flaky_calls.append(spec["seed"])
        if spec["seed"] % 2:
            raise RuntimeError("sometimes")

    runner.on_specification_complete(unreachable_mail_server)
    summary = runner.run("given-up", SEEDS, Square(), show_progress=False)
    assert calls == [0, 1, 2] and summary.completed == SEEDS
    runner.on_specification_complete(fails_every_other_time)
    runner.run("flaky", SEEDS, Square(), show_progress=False)
    assert flaky_calls == [0, 1, 2, 3, 4, 5]  # never three failures in a row
