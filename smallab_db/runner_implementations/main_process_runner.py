"""smallab 2.x's ``smallab.runner_implementations.main_process_runner``."""

from __future__ import annotations

from smallab_db.specification_runners import MainRunner

__all__ = ["MainRunner"]
