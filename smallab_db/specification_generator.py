"""smallab 2.x's ``smallab.specification_generator``."""

from __future__ import annotations

from smallab_db.generators import MultiComputerGenerator, SpecificationGenerator

__all__ = ["SpecificationGenerator", "MultiComputerGenerator"]
