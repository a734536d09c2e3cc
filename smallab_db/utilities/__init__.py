"""smallab 2.x's ``smallab.utilities``."""
