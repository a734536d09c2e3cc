"""The experiment runner: registers specifications, runs the batch's pending runs and calls the hooks."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL
from tqdm import tqdm

from smallab_db import dispatch, export, frames, importing, migration, specification
from smallab_db.batches import check_batch_name
from smallab_db.claims import Claims
from smallab_db.database import resolve_url
from smallab_db.errors import UsageError
from smallab_db.execution import Outcome
from smallab_db.experiment import Experiment, ExperimentMain, Specification, experiment_main
from smallab_db.hooks.calling import HookCaller
from smallab_db.importing import ImportReport
from smallab_db.recorder import Recorder
from smallab_db.results import load_results
from smallab_db.schema import COMPLETED, PENDING
from smallab_db.store import Owner, RunStore

if TYPE_CHECKING:
    import pandas

REGISTER_CHUNK = 500
DEFAULT_LEASE_SECONDS = 60.0

SpecificationHook = Callable[[Specification, dict[str, Any]], Any]
FailureHook = Callable[[BaseException, Specification], Any]
BatchHook = Callable[[list[Specification]], Any]
BatchFailureHook = Callable[[list[BaseException], list[Specification]], Any]


def print_failure(exception: BaseException, specification: Specification) -> None:
    """The default failure hook: print the specification and the exception to standard error."""
    tqdm.write(
        f"smallab-db: specification {json.dumps(specification, sort_keys=True)} failed with "
        f"{type(exception).__name__}: {exception} (full traceback stored in the database)",
        file=sys.stderr,
    )


@dataclass
class RunSummary:
    """What one call of :meth:`ExperimentRunner.run` did.

    ``completed`` and ``failed`` hold the specifications this call ran and stored, ``exceptions`` the failures'
    exceptions in the order of ``failed``, ``skipped`` how many given specifications were already completed, and
    ``not_stored`` the runs this call executed but whose claim another runner had taken over (its lease had lapsed),
    so that runner's outcome counts.
    """

    completed: list[Specification] = field(default_factory=list)
    failed: list[Specification] = field(default_factory=list)
    exceptions: list[BaseException] = field(default_factory=list)
    skipped: int = 0
    not_stored: list[Specification] = field(default_factory=list)  # another runner took over their claim


class ExperimentRunner:
    """Runs batches of specifications and keeps every run in a database.

    Args:
        database: a file path or a SQLAlchemy URL; default ``$SMALLAB_DB``, else ``./smallab.db``.
        lease_seconds: how long a claim survives without renewal; another host reclaims runs after it.

    Raises:
        DatabaseError: the database cannot be opened.
        SchemaError: its schema is newer than this smallab-db, or needs ``smallab-db migrate``.
    """

    def __init__(
        self, database: str | os.PathLike[str] | URL | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        if not lease_seconds > 0:
            raise UsageError(f"lease_seconds must be a positive number of seconds, but got {lease_seconds!r}")
        self.url = resolve_url(database)
        self.engine = migration.open_engine(self.url, writable=True)
        self.store = RunStore(self.engine)
        self.lease_seconds = lease_seconds
        self.experiment_folder = Path("experiment_runs")
        self._on_specification_complete: SpecificationHook | None = None
        self._on_specification_failure: FailureHook | None = print_failure
        self._on_batch_complete: BatchHook | None = None
        self._on_batch_failure: BatchFailureHook | None = None

    # -- hooks, as in smallab ------------------------------------------------------------------------------------

    def on_specification_complete(self, function: SpecificationHook | None) -> None:
        """Call ``function(specification, result)`` after each completed run; None removes the hook."""
        self._on_specification_complete = function

    def on_specification_failure(self, function: FailureHook | None) -> None:
        """Call ``function(exception, specification)`` after each failed run; None removes the hook."""
        self._on_specification_failure = function

    def on_batch_complete(self, function: BatchHook | None) -> None:
        """Call ``function(completed_specifications)`` when :meth:`run` finishes; None removes the hook."""
        self._on_batch_complete = function

    def on_batch_failure(self, function: BatchFailureHook | None) -> None:
        """Call ``function(exceptions, failed_specifications)`` when a run of the batch failed; None removes it."""
        self._on_batch_failure = function

    # -- running -------------------------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        specifications: Iterable[Specification],
        experiment: Experiment | ExperimentMain,
        continue_from_last_run: bool = True,
        num_parallel: int | None = 1,
        show_progress: bool = True,
        backend: str | None = None,
    ) -> RunSummary:
        """Run every specification of batch ``name`` that is not completed yet.

        Args:
            name: the batch name.
            specifications: JSON-object dicts; validated before anything runs or is written.
            experiment: an :class:`Experiment` or a callable ``specification -> dict``.
            continue_from_last_run: skip completed runs (True) or run every given specification again (False).
            num_parallel: 1 runs in this process; k runs k at a time with joblib; None uses every core.
            show_progress: show a progress bar that advances as runs finish.
            backend: a joblib backend ("loky", "threading", or any registered one); None keeps the caller's
                ``joblib.parallel_config`` and defaults to loky.

        Returns:
            The specifications completed and failed by this call, the exceptions, and how many were skipped.

        Raises:
            SpecError: a specification is not a JSON object; nothing was written.
            ExperimentError: ``experiment`` cannot be run.
            DatabaseError: the database failed.
        """
        check_batch_name(name)
        dispatch.check_parallelism(num_parallel)
        dispatch.check_backend(backend)
        if not isinstance(continue_from_last_run, bool):
            raise UsageError(f"continue_from_last_run must be True or False, but got {continue_from_last_run!r}")
        main = experiment_main(experiment)
        validated = specification.validate_all(specifications)
        batch_id = self.store.ensure_batch(name)
        summary = RunSummary(skipped=self._register(batch_id, validated, rerun_all=not continue_from_last_run))
        del validated
        owner = Owner(lease_seconds=self.lease_seconds)
        claims = Claims(self.store, batch_id, owner, parallelism=num_parallel or os.cpu_count() or 1)
        hooks = HookCaller()
        progress = tqdm(
            total=self.store.count(batch_id, PENDING), desc=name, unit="run", disable=not show_progress, leave=True
        )
        recorder = Recorder(self.store, owner, on_renewal=claims.retain)
        outcomes = dispatch.outcomes(main, claims, num_parallel, backend)
        interrupted = False
        try:
            for outcome in outcomes:
                recorder.submit(outcome)
                self._finished(outcome, claims.finish(outcome.run_id), summary, hooks)
                progress.update()
                progress.set_postfix_str(f"completed={len(summary.completed)} failed={len(summary.failed)}", False)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            outcomes.close()  # stops joblib's workers when leaving early
            progress.close()
            try:
                recorder.close()
            finally:
                claims.release()
            if interrupted:
                print(
                    f"smallab-db: interrupted; {len(summary.completed)} completed and {len(summary.failed)} failed "
                    "runs are stored, unfinished runs are pending again",
                    file=sys.stderr,
                )
        self._account_for_unstored(recorder, summary)
        hooks.call(self._on_batch_complete, summary.completed)
        if summary.failed:
            hooks.call(self._on_batch_failure, summary.exceptions, summary.failed)
        return summary

    def _register(self, batch_id: int, validated: list[Specification], rerun_all: bool) -> int:
        skipped = 0
        hashed = specification.hashed(validated)
        while chunk := list(itertools.islice(hashed, REGISTER_CHUNK)):
            skipped += self.store.register(batch_id, chunk, rerun_all)
        return skipped

    def _account_for_unstored(self, recorder: Recorder, summary: RunSummary) -> None:
        """Correct the summary for outcomes the database refused or stored as failures instead."""
        ids = [*recorder.refused, *recorder.stored_as_failure]
        if not ids:
            return
        specification_of = self.store.specifications_of(ids)
        for run_id in ids:
            spec = specification_of[run_id]
            if spec in summary.completed:
                summary.completed.remove(spec)
            elif spec in summary.failed:
                position = summary.failed.index(spec)
                del summary.failed[position], summary.exceptions[position]
            if run_id in recorder.stored_as_failure:
                summary.failed.append(spec)
                summary.exceptions.append(recorder.stored_as_failure[run_id])
            else:
                summary.not_stored.append(spec)

    def _finished(self, outcome: Outcome, spec: Specification, summary: RunSummary, hooks: HookCaller) -> None:
        if outcome.failed:
            exception = outcome.raised()
            summary.failed.append(spec)
            summary.exceptions.append(exception)
            hooks.call(self._on_specification_failure, exception, spec)
            return
        summary.completed.append(spec)
        if self._on_specification_complete is not None:
            result = outcome.result
            if result is None:
                assert outcome.result_pickle is not None
                result = pickle.loads(outcome.result_pickle)
            hooks.call(self._on_specification_complete, spec, result)
            outcome.result = None  # the recorder needs only the pickle

    # -- reading back --------------------------------------------------------------------------------------------

    def results(self, name: str, status: str | None = COMPLETED) -> list[dict[str, Any]]:
        """Return ``[{"specification": ..., "result": ...}]`` of the batch's runs with ``status``, in run order.

        Results are pickles: unpickling one from a database you do not trust can run arbitrary code.
        """
        return load_results(self.store, name, status)

    def set_experiment_folder(self, folder: str | os.PathLike[str]) -> None:
        """Set the folder that :meth:`export` writes to by default (as in smallab)."""
        self.experiment_folder = Path(folder)

    def get_batch_save_folder(self, name: str) -> str:
        """Return the folder that :meth:`export` writes batch ``name`` to by default."""
        return str(self.experiment_folder / name)

    def export(self, name: str, folder: str | os.PathLike[str] | None = None, layout: str = "seed") -> Path:
        """Write batch ``name`` as a folder tree (``"seed"``: smallab's, ``"smallab2"``: smallab 2.x's).

        Returns:
            The batch's folder, ``folder/name``; ``folder`` defaults to the experiment folder.
        """
        target = Path(folder) if folder is not None else self.experiment_folder
        return export.export_batch(self.store, name, target, layout)

    def import_folder(self, folder: str | os.PathLike[str], name: str) -> ImportReport:
        """Read a batch folder written by smallab or exported by smallab-db into batch ``name`` as completed runs.

        Importing again adds nothing. Unreadable files are reported in the returned report and skipped. The tree's
        pickles are loaded: import only trees you trust.
        """
        return importing.import_tree(self.store, Path(folder), name)

    def dataframe(self, name: str) -> pandas.DataFrame:
        """Return a pandas DataFrame with one row per run of batch ``name`` (needs ``smallab-db[pandas]``).

        Columns: ``spec.<key>`` and ``result.<key>`` (nested keys joined with dots), ``status``, ``duration_s``,
        ``attempts``, ``spec_hash``, ``error_type``. Results that are not JSON are unpickled.
        """
        return frames.load_dataframe(self.store, name)

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def __enter__(self) -> ExperimentRunner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
