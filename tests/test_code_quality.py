"""The package type-checks with mypy and passes the project's ruff rules (configured in pyproject.toml)."""

from __future__ import annotations

import sys
from pathlib import Path

import processes

REPOSITORY = Path(__file__).resolve().parent.parent


def test_the_package_type_checks() -> None:
    checked = processes.run(
        [sys.executable, "-m", "mypy", "smallab_db", "--ignore-missing-imports"], cwd=REPOSITORY, text=True, timeout=240
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_code_passes_ruff() -> None:
    linted = processes.run(
        [sys.executable, "-m", "ruff", "check", "smallab_db", "migrations", "tests", "benchmarks", "examples"],
        cwd=REPOSITORY,
        text=True,
        timeout=120,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
