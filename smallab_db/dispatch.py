"""Running claimed specifications in-process or in parallel through joblib, yielding outcomes as they finish."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from joblib import Parallel, delayed

from smallab_db.errors import UsageError
from smallab_db.execution import Outcome, execute
from smallab_db.experiment import ExperimentMain


def check_parallelism(num_parallel: Any) -> None:
    """Raise :class:`UsageError` unless ``num_parallel`` is a positive int or None (all cores)."""
    if num_parallel is not None and (type(num_parallel) is not int or num_parallel < 1):
        raise UsageError(f"num_parallel must be a positive int, or None for all cores, but got {num_parallel!r}")


def outcomes(
    main: ExperimentMain,
    claimed: Iterable[tuple[int, dict[str, Any]]],
    num_parallel: int | None,
    backend: str | None,
) -> Iterator[Outcome]:
    """Run each claimed specification and yield its outcome as soon as it finishes.

    Args:
        main: the experiment's callable.
        claimed: ``(run_id, specification)`` pairs, consumed lazily.
        num_parallel: 1 runs in this process; k runs k at a time with joblib; None uses every core.
        backend: a joblib backend name; None keeps the caller's ``joblib.parallel_config``, else loky.
    """
    if num_parallel == 1 and backend is None:
        for run_id, specification in claimed:
            yield execute(main, run_id, specification, in_worker=False)
        return
    parallel = Parallel(
        n_jobs=-1 if num_parallel is None else num_parallel,
        backend=backend,
        return_as="generator_unordered",
        batch_size=1,  # a batch returns all at once: larger ones would delay storing finished results
    )
    yield from parallel(delayed(execute)(main, run_id, specification, True) for run_id, specification in claimed)
