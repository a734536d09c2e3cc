"""Running claimed specifications on a Dask cluster, each as a future of its own, yielding outcomes as they finish.

The cluster is the ``distributed.Client`` the caller made (``backend="dask"``), or the one behind a joblib
``parallel_config(backend="dask")``. Each run is a task of its own, so a worker that dies affects only the runs it
held: the scheduler runs them again on another worker, and a run whose workers keep dying (more than the
scheduler's ``allowed-failures``) fails with a :class:`WorkerDiedError` while the batch goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from smallab_db.errors import MissingDependencyError, UsageError, WorkerDiedError
from smallab_db.execution import Runnable, execute, failure
from smallab_db.experiment import Specification
from smallab_db.records import Outcome, utc_now
from smallab_db.worker_writes import LinkOf

if TYPE_CHECKING:
    from distributed import Client, Future


def connect(address: str) -> Client:
    """Connect to the Dask scheduler at ``address`` (within Dask's connect timeout, 30 s unless configured); the
    client becomes the current one, which ``backend="dask"`` runs on. Close it when done (it is a context manager).

    Raises:
        MissingDependencyError: distributed is not installed.
        UsageError: the scheduler cannot be reached at ``address``.
    """
    if not address.strip():  # distributed would start a local cluster of its own instead
        raise UsageError("the Dask scheduler address is empty: give one such as tcp://10.0.0.5:8786")
    Client = _distributed().Client
    try:
        return Client(address, set_as_default=True)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(
            f"cannot connect to the Dask scheduler at {address!r}: {error}; check the address (such as "
            "tcp://10.0.0.5:8786) and that `dask scheduler` runs there"
        ) from error


def dask_client(backend: Any) -> Client | None:
    """Return the Dask client to run on: for ``backend="dask"`` the current one, for a joblib Dask backend (given,
    or chosen with ``joblib.parallel_config`` when ``backend`` is None) its own; None for any other backend.

    Raises:
        MissingDependencyError: ``backend="dask"`` but distributed is not installed.
        UsageError: ``backend="dask"`` but no ``distributed.Client`` was created.
    """
    if backend == "dask":
        try:
            return _distributed().default_client()
        except ValueError as error:
            raise UsageError(
                "backend='dask' runs on the current distributed.Client, but none exists: create one first, for "
                "example Client('tcp://scheduler-host:8786') or Client(LocalCluster())"
            ) from error
    joblib_dask = sys.modules.get("joblib._dask")  # imported only once a joblib Dask backend was made
    if joblib_dask is None:
        return None
    import joblib.parallel  # loaded already, with joblib._dask: a smallab-db process imports it only to run in parallel

    chosen = backend if backend is not None else joblib.parallel.get_active_backend()[0]
    return chosen.client if isinstance(chosen, joblib_dask.DaskDistributedBackend) else None


def outcomes(
    main: Runnable,
    claims: Iterator[tuple[int, Specification]],
    link: LinkOf,
    num_parallel: int | None,
    client: Client,
) -> Generator[Outcome, None, None]:
    """Run each claimed specification as a task on ``client``'s cluster and yield its outcome as it finishes.

    Args:
        main: the experiment's callable, sent to the workers with each run.
        claims: the claimed runs, consumed as tasks finish.
        link: the link of a claimed run (see :mod:`smallab_db.worker_writes`), which travels with it.
        num_parallel: how many runs are on the cluster at once; None: as many as its workers have threads.
        client: the cluster's client.
    """
    from distributed import as_completed

    in_flight = num_parallel or max(1, sum(client.nthreads().values()))
    finished = as_completed()
    submitted: dict[Future, tuple[int, datetime]] = {}

    def submit_next() -> None:
        claimed = next(claims, None)
        if claimed is not None:
            run_id, specification = claimed
            # main travels with each task (not scattered once): data held only by workers that died would be lost
            future = client.submit(execute, main, link(run_id), specification, True, pure=False)
            submitted[future] = (run_id, utc_now())
            finished.add(future)

    try:
        for _ in range(in_flight):
            submit_next()
        for future in finished:
            yield _outcome(future, *submitted.pop(future))
            future.release()
            submit_next()
    finally:
        if submitted:  # left early (Ctrl-C, an error): take the runs not finished off the cluster
            client.cancel(list(submitted))


def _distributed() -> ModuleType:
    """Import Dask's distributed scheduler, the optional extra ``smallab-db[dask]``.

    Raises:
        MissingDependencyError: it is not installed.
    """
    try:
        import distributed
    except ImportError as error:
        raise MissingDependencyError(
            f"running on Dask needs its distributed scheduler ({error}): pip install 'smallab-db[dask]'"
        ) from error
    return distributed


def _outcome(future: Future, run_id: int, submitted_at: datetime) -> Outcome:
    """The outcome a finished task carries, or the failure of a run whose workers kept dying.

    Raises:
        Exception: the task failed for another reason than its workers dying (the cluster went away, say).
    """
    from distributed import KilledWorker

    if future.status != "error":
        outcome: Outcome = future.result()
        return outcome
    error = future.exception()
    if not isinstance(error, KilledWorker):
        raise error
    executions = error.allowed_failures + 1
    died = WorkerDiedError(
        f"the Dask worker running this specification died {executions} times, each time on another worker (the "
        f"last was {error.last_worker.address}), so the scheduler gave up on it: check the experiment's memory use "
        "and the workers' logs"
    )
    outcome = failure(run_id, submitted_at, died, in_worker=False)
    outcome.executions = executions
    return outcome
