"""smallab 2.x's experiment classes, under their 2.x module paths (defined in :mod:`smallab_db.experiment_kinds`)."""
