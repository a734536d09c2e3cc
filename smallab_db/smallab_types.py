"""smallab 2.x's ``smallab.smallab_types``: the type names its signatures use."""

from __future__ import annotations

from smallab_db.experiment import Specification
from smallab_db.experiment_kinds import ExpProgressTuple

__all__ = ["Specification", "ExpProgressTuple"]
