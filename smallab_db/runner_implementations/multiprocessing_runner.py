"""smallab 2.x's ``smallab.runner_implementations.multiprocessing_runner``."""

from __future__ import annotations

from smallab_db.specification_runners import MultiprocessingRunner

__all__ = ["MultiprocessingRunner"]
