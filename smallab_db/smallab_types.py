"""smallab 2.x's ``smallab.smallab_types``: the type names its signatures use."""

from __future__ import annotations

from typing import Any

from smallab_db.experiment_kinds import ExpProgressTuple

Specification = dict[str, Any]

__all__ = ["Specification", "ExpProgressTuple"]
