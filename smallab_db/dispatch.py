"""Running claimed specifications in-process, or in parallel through joblib (:mod:`smallab_db.joblib_dispatch`) or
Dask (:mod:`smallab_db.dask_dispatch`), yielding outcomes as they finish."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from smallab_db import dask_dispatch
from smallab_db.claims import Claims
from smallab_db.errors import UsageError
from smallab_db.execution import Runnable, execute
from smallab_db.records import Outcome, StoredRuns
from smallab_db.worker_writes import LinkOf


def check_parallelism(num_parallel: Any) -> None:
    """Raise :class:`UsageError` unless ``num_parallel`` is a positive int or None (all cores)."""
    if num_parallel is not None and (type(num_parallel) is not int or num_parallel < 1):
        raise UsageError(f"num_parallel must be a positive int, or None for all cores, but got {num_parallel!r}")


def check_backend(backend: Any) -> None:
    """Raise :class:`UsageError` unless ``backend`` is None, a registered joblib backend name, or a backend object;
    ``"dask"`` needs a ``distributed.Client`` (see :func:`dask_dispatch.dask_client`)."""
    if backend is None:
        return
    from smallab_db import joblib_dispatch  # imported only when a backend is named: see its docstring

    if backend == "dask":
        dask_dispatch.dask_client(backend)
    if not joblib_dispatch.is_backend(backend):
        known = joblib_dispatch.known_backends()
        raise UsageError(f"backend must be None or a joblib backend, one of {known}, but got {backend!r}")


def runs_here(num_parallel: int | None, backend: str | None) -> bool:
    """Whether :func:`outcomes` executes the runs in the calling thread, one at a time."""
    return num_parallel == 1 and backend is None


def outcomes(
    main: Runnable,
    claims: Claims,
    link: LinkOf,
    num_parallel: int | None,
    backend: str | None,
    stop_at_first_failure: bool = False,
    keep_results: bool = True,
) -> Generator[Outcome | StoredRuns, None, None]:
    """Run each claimed specification and yield its outcome as soon as it finishes; runs that workers completed and
    stored themselves, with nothing more to hand on, come as :class:`StoredRuns`, a chunk's at once.

    When a loky worker process dies, joblib stops the whole pool: the runs that were in flight are then executed
    again one at a time, alone in a new worker, so that the one whose worker dies again is marked failed with the
    cause, the others complete, and the batch goes on.

    Args:
        main: the experiment's callable.
        claims: the claimed runs, consumed lazily.
        link: the link of a claimed run (see :mod:`smallab_db.worker_writes`), which travels with it.
        num_parallel: 1 runs in this process; k runs k at a time with joblib; None uses every core.
        backend: a joblib backend name; None keeps the caller's ``joblib.parallel_config``, else loky. Dask runs
            on its cluster without joblib (see :mod:`smallab_db.dask_dispatch`).
        stop_at_first_failure: run nothing past the first failure: workers get runs in waves of one each, the next
            wave once the last has returned with no failure.
        keep_results: outcomes that workers stored (their ``fate`` is set) come back with their result; else the
            completed ones come as :class:`StoredRuns` and the others without their result.
    """
    if runs_here(num_parallel, backend):
        for run_id, specification in claims:
            yield execute(main, link(run_id), specification, in_worker=False)
        return
    client = dask_dispatch.dask_client(backend)
    if client is not None:
        yield from dask_dispatch.outcomes(main, iter(claims), link, num_parallel, client)
        return
    from smallab_db import joblib_dispatch  # imported only to run in parallel: see its docstring

    yield from joblib_dispatch.outcomes(main, claims, link, num_parallel, backend, stop_at_first_failure, keep_results)
