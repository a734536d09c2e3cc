"""smallab 2.x's ``smallab.experiment_types.experiment``."""

from __future__ import annotations

from smallab_db.experiment_kinds import Experiment, ExperimentBase

__all__ = ["ExperimentBase", "Experiment"]
