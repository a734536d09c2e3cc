"""Ready-made hooks for :class:`smallab_db.ExperimentRunner`."""
