"""The package type-checks with mypy and passes the project's ruff rules (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def test_the_package_type_checks() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "smallab_db", "--ignore-missing-imports"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_code_passes_ruff() -> None:
    linted = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "smallab_db", "migrations", "tests", "benchmarks", "examples"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
