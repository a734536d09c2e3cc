"""Batch names the Python API refuses with a :class:`UsageError` before anything is stored, on both databases: lone
surrogates (what an undecodable byte of a command line or file name becomes in Python) and NUL characters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, UsageError
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
