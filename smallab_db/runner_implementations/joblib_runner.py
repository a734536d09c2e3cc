"""smallab 2.x's ``smallab.runner_implementations.joblib_runner``."""

from __future__ import annotations

from smallab_db.specification_runners import JoblibRunner

__all__ = ["JoblibRunner"]
