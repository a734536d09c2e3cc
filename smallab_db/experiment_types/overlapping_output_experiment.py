"""smallab 2.x's ``smallab.experiment_types.overlapping_output_experiment``."""

from __future__ import annotations

from smallab_db.experiment_kinds import (
    OverlappingOutputCheckpointedExperiment,
    OverlappingOutputCheckpointedExperimentReturnValue,
)

__all__ = ["OverlappingOutputCheckpointedExperiment", "OverlappingOutputCheckpointedExperimentReturnValue"]
