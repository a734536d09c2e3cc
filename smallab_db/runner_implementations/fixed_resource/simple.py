"""smallab 2.x's ``smallab.runner_implementations.fixed_resource.simple``."""

from __future__ import annotations

from smallab_db.specification_runners import SimpleFixedResourceAllocatorRunner

__all__ = ["SimpleFixedResourceAllocatorRunner"]
