"""smallab 2.x's ``smallab.experiment_types.checkpointed_experiment``."""

from __future__ import annotations

from smallab_db.experiment_kinds import CheckpointedExperiment, HasCheckpoint, IterativeExperiment

__all__ = ["HasCheckpoint", "IterativeExperiment", "CheckpointedExperiment"]
