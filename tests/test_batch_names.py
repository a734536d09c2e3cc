"""Batch names the Python API refuses with a :class:`UsageError` before anything is stored, on both databases: lone
surrogates (what an undecodable byte of a command line or file name becomes in Python), NUL characters, and names
that cannot be folder names, which ``export`` would refuse later."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from click.testing import CliRunner
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, UsageError
from smallab_db.cli import main
from smallab_db.database import resolve_url

BAD_NAMES = {
    "lone-surrogate": "x\ud800",
    "undecodable-byte": "caf\udce9",  # b"caf\xe9" decoded with surrogateescape, as on a Linux command line
    "nul": "a\x00b",
}


def stored_rows(database: str) -> list[tuple[Any, ...]]:
    """Every row of ``batches`` and ``runs``, in id order: what must not change."""
    engine = sqlalchemy.create_engine(resolve_url(database))
    try:
        with engine.connect() as connection:
            batches = connection.exec_driver_sql("SELECT * FROM batches ORDER BY id").all()
            runs = connection.exec_driver_sql("SELECT * FROM runs ORDER BY id").all()
    finally:
        engine.dispose()
    return [("batches", *row) for row in batches] + [("runs", *row) for row in runs]


def attempts(runner: ExperimentRunner, tree: Path) -> dict[str, Callable[[str], object]]:
    """Every way the Python API takes a batch name."""
    return {
        "run": lambda name: runner.run(name, [{"seed": 1}], Square(), show_progress=False),
        "import_folder": lambda name: runner.import_folder(tree, name),
        "results": runner.results,
        "export": lambda name: runner.export(name, tree.parent / "again"),
    }


@pytest.mark.parametrize("bad", sorted(BAD_NAMES))
def test_bad_batch_names_raise_usage_error_and_store_nothing(database_url: str, tmp_path: Path, bad: str) -> None:
    """``run``, ``import_folder``, ``results`` and ``export`` refuse the name with a UsageError that names it and the
    fix; no row changes and no folder is written."""
    name = BAD_NAMES[bad]
    with ExperimentRunner(database_url) as runner:
        runner.on_specification_failure(None)
        runner.run("done", [{"seed": seed} for seed in range(2)], Square(), show_progress=False)
        runner.run("broken", [{"seed": seed} for seed in range(2)], FailOnOdd(), show_progress=False)
        tree = runner.export("done", tmp_path / "tree")
        before = stored_rows(database_url)
        for how, attempt in attempts(runner, tree).items():
            with pytest.raises(UsageError, match="batch name") as raised:
                attempt(name)
            message = str(raised.value)
            assert repr(name) in message, how
            assert "give the name in UTF-8" in message or "remove it" in message, f"{how} names no fix: {message}"
    assert stored_rows(database_url) == before
    assert not (tmp_path / "again").exists()


# Names a batch folder cannot have: `export` would refuse them after `run` had stored the runs.
FOLDER_NAMES = {
    "slash": ("exp/v1", "'exp-v1'"),
    "backslash": ("exp\\v1", "'exp-v1'"),
    "dot": (".", "another name"),
    "dot-dot": ("..", "another name"),
    "escape": ("../escape", "another name"),
    "too-many-bytes": ("é" * 128, "a shorter name"),  # 128 characters, 256 bytes in UTF-8
}


@pytest.mark.parametrize("case", sorted(FOLDER_NAMES))
def test_names_export_could_not_use_are_refused_at_run_and_import(database_url: str, tmp_path: Path, case: str) -> None:
    """``run`` and ``import_folder`` refuse a name that cannot be a folder name, naming the fix, before anything is
    stored; so every batch they store can be exported."""
    name, fix = FOLDER_NAMES[case]
    with ExperimentRunner(database_url) as runner:
        runner.run("done", [{"seed": seed} for seed in range(2)], Square(), show_progress=False)
        tree = runner.export("done", tmp_path / "tree")
        before = stored_rows(database_url)
        for how, attempt in list(attempts(runner, tree).items())[:2]:
            with pytest.raises(UsageError, match="cannot be a folder name|folder name, which `export`") as raised:
                attempt(name)
            assert fix in str(raised.value), f"{how} names no fix: {raised.value}"
    assert stored_rows(database_url) == before


@pytest.mark.parametrize("name", ["exp-v1", "a b", "é" * 127, "-", "v1.2", ".hidden"])
def test_names_that_can_be_folder_names_run_and_export(sqlite_path: str, tmp_path: Path, name: str) -> None:
    """Ordinary names, up to 255 bytes in UTF-8, are accepted, and the batch exports to a folder of that name."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run(name, [{"seed": 1}], Square(), show_progress=False)
        assert runner.export(name, tmp_path / "out") == tmp_path / "out" / name
    assert (tmp_path / "out" / name / "completed.json").is_file()


def test_a_batch_an_older_version_named_with_a_slash_can_still_be_read_and_removed(sqlite_path: str) -> None:
    """Finding a batch checks only that its name is text: a batch an older smallab-db stored as ``exp/v1`` is still
    read by ``results`` and the CLI, and ``rm`` deletes it."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("exp-v1", [{"seed": 1}], Square(), show_progress=False)
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute("UPDATE batches SET name = 'exp/v1'")
    connection.close()
    with ExperimentRunner(sqlite_path) as runner:
        assert runner.results("exp/v1") == [{"specification": {"seed": 1}, "result": {"square": 1}}]
    listed = CliRunner().invoke(main, ["runs", sqlite_path, "--batch", "exp/v1"])
    assert listed.exit_code == 0 and "completed" in listed.stdout, listed.output
    removed = CliRunner().invoke(main, ["rm", sqlite_path, "--batch", "exp/v1", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert stored_rows(sqlite_path) == []
