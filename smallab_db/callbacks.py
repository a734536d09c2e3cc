"""smallab 2.x's callbacks: attach them with ``ExperimentRunner.attach_callbacks([...])``.

Each method is called where the matching hook of :class:`~smallab_db.ExperimentRunner` is: after the run's outcome
is stored, from a thread of the calling process (2.x called the per-run methods in the worker).
"""

from __future__ import annotations

from typing import Any

from smallab_db.experiment import Specification
from smallab_db.utilities.hooks import format_exception


class CallbackManager:
    """Override any of the four methods; :meth:`set_experiment_name` gives the batch name as ``self.name``."""

    name: str

    def set_experiment_name(self, name: str) -> None:
        """Called with the batch name when ``run`` starts."""
        self.name = name

    def on_specification_complete(self, specification: Specification, result: Any) -> None:
        """Called after each completed run."""

    def on_specification_failure(self, exception: BaseException, specification: Specification) -> None:
        """Called after each failed run."""

    def on_batch_complete(self, specifications: list[Specification]) -> None:
        """Called when ``run`` ends, with the specifications it completed (not called when there are none)."""

    def on_batch_failure(self, errors: list[BaseException], specifications: list[Specification]) -> None:
        """Called when ``run`` ends with failures, with their exceptions and specifications."""


class PrintCallback(CallbackManager):
    """Prints each completed and failed run."""

    def on_specification_complete(self, specification: Specification, result: Any) -> None:
        print(f"completed: {specification}\n{result}")

    def on_specification_failure(self, exception: BaseException, specification: Specification) -> None:
        print(f"failed: {specification}\n{format_exception(exception)}")
