"""smallab 2.x's ``smallab.runner_implementations.fixed_resource``."""
