"""Running claimed specifications in parallel through joblib (loky by default), in chunks sized by the pace, and
running again alone the runs a dead worker was running.

Imported only by a call that runs in parallel: joblib and what it imports (numpy among them) take about 0.1 s to
import, and as long again to tear down when the process exits, which a serial runner and the CLI do not pay.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Generator
from typing import Any

import joblib.parallel
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError
from joblib.parallel import ParallelBackendBase

from smallab_db import recorder, worker_writes
from smallab_db.claims import Claims
from smallab_db.errors import WorkerDiedError
from smallab_db.execution import Runnable, execute, failure
from smallab_db.experiment import Specification
from smallab_db.pace import Pace, seconds_taken
from smallab_db.records import ChunkReport, Fate, Outcome, StoredRuns, utc_now
from smallab_db.worker_writes import LinkOf, RunLink

logger = logging.getLogger("smallab_db")

_EXIT_CODES = re.compile(r"exit codes of the workers are \{(.*?)\}")
_CAUSES = {
    "SIGSEGV": "it crashed with a segmentation fault (SIGSEGV), for example in a C extension",
    "SIGKILL": "it was killed with SIGKILL, which the out-of-memory killer sends: check the experiment's memory use",
    "SIGABRT": "it aborted (SIGABRT), for example on a failed assertion in a C extension",
    "EXIT": "it exited without returning (os._exit, or a library calling exit)",
}


def known_backends() -> list[str]:
    """The names of the registered joblib backends."""
    return sorted({*joblib.parallel.BACKENDS, *joblib.parallel.EXTERNAL_BACKENDS})


def is_backend(backend: Any) -> bool:
    """Whether ``backend`` is a joblib backend object, or the name of a registered one."""
    return isinstance(backend, ParallelBackendBase) or backend in known_backends()


def outcomes(
    main: Runnable,
    claims: Claims,
    link: LinkOf,
    num_parallel: int | None,
    backend: str | None,
    stop_at_first_failure: bool,
    keep_results: bool,
) -> Generator[Outcome | StoredRuns, None, None]:
    """Run the claimed runs with joblib and yield their outcomes as chunks finish (see
    :func:`smallab_db.dispatch.outcomes`): the completed runs a worker stored come as :class:`StoredRuns`."""
    if stop_at_first_failure:
        yield from _waves(main, claims, link, num_parallel or os.cpu_count() or 1, backend)
        return
    pace = Pace()
    while True:
        parallel = Parallel(
            n_jobs=-1 if num_parallel is None else num_parallel,
            backend=backend,
            return_as="generator_unordered",
            batch_size=1,  # runs are chunked by pace instead: see smallab_db.pace
        )
        chunks = pace.chunks(iter(claims))
        try:
            tasks = (delayed(execute_chunk)(main, link, chunk, pace.runs_are_short(), keep_results) for chunk in chunks)
            for report in parallel(tasks):
                pace.measure(report.runs, report.seconds)
                if report.stored.run_ids:
                    yield report.stored
                yield from report.outcomes
            return
        except TerminatedWorkerError:
            for run_id, specification in claims.in_flight():
                yield _execute_alone(main, link(run_id), specification)


def _waves(
    main: Runnable, claims: Claims, link: LinkOf, size: int, backend: str | None
) -> Generator[Outcome, None, None]:
    """Run ``size`` claimed runs at a time, one per worker; stop after the first wave with a failure."""
    claimed = iter(claims)
    with Parallel(n_jobs=size, backend=backend) as parallel:
        while wave := list(itertools.islice(claimed, size)):
            try:
                done: list[Outcome] = parallel(
                    delayed(execute)(main, link(run_id), spec, True) for run_id, spec in wave
                )
            except TerminatedWorkerError:
                done = [_execute_alone(main, link(run_id), spec) for run_id, spec in claims.in_flight()]
            yield from done
            if any(outcome.failed for outcome in done):
                return


def execute_chunk(
    main: Runnable, link: LinkOf, chunk: list[tuple[int, Specification]], store_here: bool, keep_results: bool
) -> ChunkReport:
    """Execute a chunk of runs one after the other in a worker process and report their outcomes.

    With ``store_here`` (short runs: see :meth:`Pace.runs_are_short`), the worker stores them itself. The completed
    runs it stored come back as ids alone, unless ``keep_results`` (a hook needs their results); the others come back
    light: without their output, and without their result unless ``keep_results``. Outcomes it cannot store come
    back whole, to be stored by the calling process, as do all of them without ``store_here``.
    """
    outcomes = [execute(main, link(run_id), specification, in_worker=True) for run_id, specification in chunk]
    report = ChunkReport(outcomes, StoredRuns([]), seconds_taken(outcomes))
    if not store_here or not outcomes:
        return report
    claimed = link(outcomes[0].run_id)  # the database and the claim token, shared by the chunk
    try:
        verdicts = recorder.store_group(worker_writes.store_for(claimed.database), claimed.token, outcomes)
    except Exception as error:  # the calling process stores them, or says why it cannot
        logger.warning("smallab-db: a worker could not store its outcomes, the runner will: %s", error)
        return report
    report.outcomes = []
    for verdict in verdicts:
        light = verdict.outcome
        if verdict.fate is Fate.STORED and not light.failed and not keep_results:
            report.stored.run_ids.append(light.run_id)
            continue
        light.fate = verdict.fate
        light.output = light.result_json = None
        if not keep_results:
            light.result_pickle = None
        report.outcomes.append(light)
    return report


def _execute_alone(main: Runnable, link: RunLink, specification: Specification) -> Outcome:
    """Execute one run in a worker of its own, after a worker died; it counts as a second execution."""
    started_at = utc_now()
    try:
        (outcome,) = Parallel(n_jobs=2, backend="loky")([delayed(execute)(main, link, specification, True)])
        assert isinstance(outcome, Outcome)
    except TerminatedWorkerError as error:
        died = WorkerDiedError(
            f"the worker process running this specification died twice, the second time running it alone: "
            f"{worker_death_cause(str(error))}"
        )
        outcome = failure(link.run_id, started_at, died, in_worker=False)
    outcome.executions = 2
    return outcome


def worker_death_cause(message: str) -> str:
    """Describe why loky's worker died, from the exit codes its error message lists."""
    match = _EXIT_CODES.search(message)
    codes = match.group(1) if match else "unknown"
    causes = [cause for name, cause in _CAUSES.items() if name in codes]
    return f"{'; '.join(causes) or 'it was killed by a signal'} (exit codes {codes})"
