"""The experiment runner: :class:`ExperimentRunner` lives in :mod:`smallab_db.runner.runner`, where smallab 2.x
scripts import it from; ``smallab_db.runner.ExperimentRunner`` names the same class."""

from __future__ import annotations

from smallab_db.runner.runner import ExperimentRunner

__all__ = ["ExperimentRunner"]
