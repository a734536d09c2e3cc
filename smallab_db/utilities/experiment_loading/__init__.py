"""smallab 2.x's ``smallab.utilities.experiment_loading``."""
