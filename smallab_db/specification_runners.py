"""smallab 2.x's specification runners, which ``run(..., specification_runner=...)`` takes: each chooses how the
batch's runs are dispatched, and maps onto the core's ``num_parallel`` and joblib backend.

- ``MainRunner()``: one run at a time in the calling process (``num_parallel=1``).
- ``JoblibRunner(n)``: ``n`` runs at a time in threads (joblib's ``threading`` backend; ``n`` as joblib's ``n_jobs``:
  None is 1, -1 every core).
- ``MultiprocessingRunner(n)``: ``n`` runs at a time in worker processes (loky; None: one per core).
- ``SimpleFixedResourceAllocatorRunner(resources)``: one run per resource at a time, in worker processes, each run
  holding its resource in ``self.resource`` (see :mod:`smallab_db.resource_slots`).

After ``run`` the runner object answers ``get_completed()``, ``get_failed_specifications()`` and
``get_exceptions()`` for that call, as in 2.x.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from smallab_db.errors import UsageError
from smallab_db.experiment import Specification

PROCESSES = "loky"
THREADS = "threading"


class BaseAbstractRunner:
    """What every 2.x specification runner has: the outcome lists of the last ``run`` call."""

    completed_specifications: list[Specification]
    failed_specifications: list[Specification]
    exceptions: list[BaseException]

    def finish(
        self,
        completed_specifications: list[Specification],
        failed_specifications: list[Specification],
        exceptions: list[BaseException],
    ) -> None:
        """Keep the outcome of a ``run`` call (the runner calls this)."""
        self.completed_specifications = completed_specifications
        self.failed_specifications = failed_specifications
        self.exceptions = exceptions

    def get_completed(self) -> list[Specification]:
        """The specifications the last ``run`` call completed."""
        return self.completed_specifications

    def get_failed_specifications(self) -> list[Specification]:
        """The specifications the last ``run`` call failed."""
        return self.failed_specifications

    def get_exceptions(self) -> list[BaseException]:
        """The exceptions of :meth:`get_failed_specifications`, in the same order."""
        return self.exceptions

    def set_multiprocessing_context(self, ctx: Any) -> None:
        """Kept from smallab 2.x: workers are started by loky whatever the context."""
        self.ctx = ctx

    def get_multiprocessing_context(self) -> Any:
        """Kept from smallab 2.x."""
        return getattr(self, "ctx", None)

    def dispatch(self) -> Dispatch:
        """How this runner's runs are dispatched."""
        raise UsageError(
            f"smallab-db cannot run specifications with {type(self).__name__}, a runner of your own: smallab-db "
            "claims runs from the database and stores their outcomes itself. Use MainRunner, JoblibRunner, "
            "MultiprocessingRunner or SimpleFixedResourceAllocatorRunner, or pass backend= any registered joblib "
            "backend (ray registers one with ray.util.joblib.register_ray(), dask with dask.distributed)"
        )


class SimpleAbstractRunner(BaseAbstractRunner):
    """smallab 2.x's base of runners that call one function per specification."""


class ComplexAbstractRunner(BaseAbstractRunner):
    """smallab 2.x's base of runners that run specifications themselves."""


@dataclass(frozen=True)
class Dispatch:
    """How a ``run`` call dispatches its runs."""

    num_parallel: int | None
    backend: Any  # a joblib backend name or object, or None
    resources: tuple[Any, ...] | None = None
    show_progress: bool | None = None  # None: as ``run`` was told


class MainRunner(SimpleAbstractRunner):
    """Runs the specifications one at a time in the calling process."""

    def __init__(self, show_progress: bool = True) -> None:
        self.show_progress = show_progress

    def dispatch(self) -> Dispatch:
        return Dispatch(num_parallel=1, backend=None, show_progress=self.show_progress)


class JoblibRunner(SimpleAbstractRunner):
    """Runs the specifications in ``num_parallel`` threads with joblib (its ``n_jobs``: None is 1, -1 every core)."""

    def __init__(self, num_parallel: int | None) -> None:
        self.num_parallel = num_parallel

    def dispatch(self) -> Dispatch:
        return Dispatch(num_parallel=_joblib_jobs(self.num_parallel), backend=THREADS)


class MultiprocessingRunner(SimpleAbstractRunner):
    """Runs the specifications in ``num_parallel`` worker processes (None: one per core)."""

    def __init__(self, num_parallel: int | None = None) -> None:
        self.num_parallel = num_parallel

    def dispatch(self) -> Dispatch:
        if self.num_parallel is not None and (type(self.num_parallel) is not int or self.num_parallel < 1):
            raise UsageError(
                f"MultiprocessingRunner(num_parallel) must be a positive int or None, but got {self.num_parallel!r}"
            )
        return Dispatch(num_parallel=self.num_parallel, backend=PROCESSES)


class SimpleFixedResourceAllocatorRunner(ComplexAbstractRunner):
    """Runs one specification per resource at a time, in worker processes; each run finds its resource in
    ``self.resource``, and no two running runs hold the same one (a GPU each, say)."""

    def __init__(self, resources: Sequence[Any], mp_override: ModuleType | None = None) -> None:
        self.resources = list(resources)
        self.mp = mp_override

    def dispatch(self) -> Dispatch:
        if not self.resources:
            raise UsageError("SimpleFixedResourceAllocatorRunner needs at least one resource, but got an empty list")
        return Dispatch(num_parallel=len(self.resources), backend=PROCESSES, resources=tuple(self.resources))


def dispatch_of(
    specification_runner: Any,
    num_parallel: int | None,
    backend: Any,
    context_type: str | None,
    multiprocessing_lib: ModuleType | None,
) -> Dispatch:
    """Return how a ``run`` call dispatches, from 2.x's ``specification_runner`` or the core's settings.

    Raises:
        UsageError: both were given, the runner is not one of smallab 2.x's, or ``context_type`` is no start method.
    """
    _check_context(context_type, multiprocessing_lib)
    if specification_runner is None:
        return Dispatch(num_parallel=num_parallel, backend=backend)
    if num_parallel != 1 or backend is not None:
        raise UsageError(
            "give either specification_runner (smallab 2.x) or num_parallel and backend, not both: "
            f"got specification_runner={specification_runner!r:.80}, num_parallel={num_parallel!r}, backend={backend!r}"
        )
    if not isinstance(specification_runner, BaseAbstractRunner):
        raise UsageError(
            "specification_runner must be one of smallab 2.x's runners (MainRunner(), JoblibRunner(n), "
            f"MultiprocessingRunner(), SimpleFixedResourceAllocatorRunner(resources)), but got "
            f"{type(specification_runner).__name__} {specification_runner!r:.80}"
        )
    return specification_runner.dispatch()


def _joblib_jobs(n_jobs: Any) -> int | None:
    if n_jobs is None:
        return 1
    if type(n_jobs) is not int or n_jobs == 0:
        raise UsageError(f"JoblibRunner(num_parallel) takes joblib's n_jobs, an int other than 0 or None: {n_jobs!r}")
    if n_jobs == -1:
        return None
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _check_context(context_type: Any, multiprocessing_lib: ModuleType | None) -> None:
    """Accept smallab 2.x's ``context_type``: a start method of ``multiprocessing_lib`` (or multiprocessing), or
    None. Worker processes are started by loky in any case (a fresh interpreter, as with ``"spawn"``)."""
    if context_type is None:
        return
    methods = (multiprocessing_lib or multiprocessing).get_all_start_methods()
    if context_type not in methods:
        raise UsageError(f"context_type must be one of {sorted(methods)} or None, but got {context_type!r}")
