"""smallab 2.x's ``smallab.runner_implementations.abstract_runner``."""

from __future__ import annotations

from smallab_db.specification_runners import BaseAbstractRunner, ComplexAbstractRunner, SimpleAbstractRunner

__all__ = ["BaseAbstractRunner", "SimpleAbstractRunner", "ComplexAbstractRunner"]
