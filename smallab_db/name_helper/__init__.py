"""smallab 2.x's ``smallab.name_helper``."""
