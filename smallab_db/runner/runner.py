"""The experiment runner: the smallab API over a database; each call of ``run`` is a :class:`BatchRun`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL
from tqdm import tqdm

from smallab_db import dispatch, export, frames, importing, migration, specification, worker_writes
from smallab_db.batch_run import BatchFailureHook, BatchHook, BatchRun, Hooks
from smallab_db.batches import check_batch_name
from smallab_db.database import resolve_url
from smallab_db.errors import UsageError
from smallab_db.execution import Runnable
from smallab_db.experiment import Experiment, ExperimentMain, Specification, experiment_main
from smallab_db.experiment_kinds import ExperimentBase
from smallab_db.importing import ImportReport
from smallab_db.reporting import FailureHook, SpecificationHook
from smallab_db.resource_slots import ResourceSlots
from smallab_db.results import load_results
from smallab_db.run_folder import RunFolder, smallab2_files
from smallab_db.run_task import Smallab2Task, check_runnable
from smallab_db.schema import COMPLETED
from smallab_db.specification_runners import Dispatch, dispatch_of
from smallab_db.store import RunStore
from smallab_db.summary import RunSummary

if TYPE_CHECKING:
    import pandas

DEFAULT_LEASE_SECONDS = 60.0


def print_failure(exception: BaseException, specification: Specification) -> None:
    """The default failure hook: print the specification and the exception to standard error, above the progress
    bar."""
    tqdm.write(
        f"smallab-db: specification {json.dumps(specification, sort_keys=True)} failed with "
        f"{type(exception).__name__}: {exception} (full traceback stored in the database)",
        file=sys.stderr,
    )


_CALLBACK_METHODS = ("on_specification_complete", "on_specification_failure", "on_batch_complete", "on_batch_failure")


class _Callbacks:
    """A hook that calls one method of every attached smallab 2.x callback, each even when an earlier one raised."""

    def __init__(self, callbacks: list[Any], method: str) -> None:
        self._callbacks = callbacks
        self._method = method

    def __call__(self, *arguments: Any) -> None:
        if self._method == "on_batch_complete" and not arguments[0]:
            return
        errors = []
        for callback in self._callbacks:
            try:
                getattr(callback, self._method)(*arguments)
            except Exception as error:  # the hook caller logs the first
                errors.append(error)
        if errors:
            raise errors[0]


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
        self._hooks = Hooks(on_specification_failure=print_failure)
        self._callbacks: list[Any] = []
        worker_writes.share_store(self.url, self.store)

    # -- hooks, as in smallab ------------------------------------------------------------------------------------

    def on_specification_complete(self, function: SpecificationHook | None) -> None:
        """Call ``function(specification, result)`` after each completed run; None removes the hook."""
        self._hooks.on_specification_complete = function

    def on_specification_failure(self, function: FailureHook | None) -> None:
        """Call ``function(exception, specification)`` after each failed run; None removes the hook."""
        self._hooks.on_specification_failure = function

    def on_batch_complete(self, function: BatchHook | None) -> None:
        """Call ``function(completed_specifications)`` when :meth:`run` finishes; None removes the hook."""
        self._hooks.on_batch_complete = function

    def on_batch_failure(self, function: BatchFailureHook | None) -> None:
        """Call ``function(exceptions, failed_specifications)`` when a run of the batch failed; None removes it."""
        self._hooks.on_batch_failure = function

    def attach_callbacks(self, callbacks: Sequence[Any]) -> None:
        """Use smallab 2.x callbacks (``smallab_db.callbacks.CallbackManager`` objects) instead of the hooks: each of
        their four methods is called, in list order, where the matching hook would be (``on_batch_complete`` only
        when runs completed, as in 2.x); an empty list removes every hook."""
        self._callbacks = list(callbacks)
        if not self._callbacks:
            self._hooks = Hooks()
            return
        self._hooks = Hooks(*(_Callbacks(self._callbacks, method) for method in _CALLBACK_METHODS))

    # -- running -------------------------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        specifications: Iterable[Specification],
        experiment: Experiment | ExperimentBase | ExperimentMain,
        continue_from_last_run: bool = True,
        num_parallel: int | None = 1,
        show_progress: bool = True,
        backend: str | None = None,
        *,
        propagate_exceptions: bool = False,
        force_pickle: bool = False,
        specification_runner: Any = None,
        use_dashboard: bool | None = None,
        context_type: str | None = None,
        multiprocessing_lib: ModuleType | None = None,
    ) -> RunSummary:
        """Run every specification of batch ``name`` that is not completed yet.

        The keywords after ``backend`` are smallab 2.x's, with 2.x's meaning (see docs/smallab2.md).

        Args:
            name: the batch name.
            specifications: JSON-object dicts; validated before anything runs or is written. For a smallab 2.x
                experiment, tuples in them become lists.
            experiment: an :class:`Experiment`, a smallab 2.x experiment (``smallab_db.experiment_types``) or a
                callable ``specification -> dict``.
            continue_from_last_run: skip completed runs (True) or run every given specification again (False).
            num_parallel: 1 runs in this process; k runs k at a time with joblib; None uses every core.
            show_progress: show a progress bar that advances as runs finish.
            backend: a joblib backend ("loky", "threading", or any registered one); None keeps the caller's
                ``joblib.parallel_config`` and defaults to loky.
            propagate_exceptions: store the first failure, stop the batch (unfinished runs go back to pending) and
                raise it.
            force_pickle: export every result of a 2.x experiment as ``run.pkl``, also those JSON can hold.
            specification_runner: a 2.x runner (``smallab_db.runner_implementations``), instead of
                ``num_parallel`` and ``backend``.
            use_dashboard: True shows a bar per running run (a plain line without a terminal); False prints what
                runs log, as 2.x did; None (the default) shows only the progress bar.
            context_type: a multiprocessing start method, as in 2.x; checked only, loky starts the workers.
            multiprocessing_lib: the module ``context_type`` is checked against (2.x's torch.multiprocessing, say).

        Returns:
            The specifications completed and failed by this call, the exceptions, and how many were skipped.

        Raises:
            SpecError: a specification is not a JSON object; nothing was written.
            ExperimentError: ``experiment`` cannot be run.
            UsageError: an argument has a value it cannot take.
            DatabaseError: the database failed.
            ExportError: a 2.x experiment's runs are stored, but writing ``experiment_runs/<name>`` failed.
        """
        check_batch_name(name)
        dispatch.check_parallelism(num_parallel)
        dispatch.check_backend(backend)
        for keyword, value in [
            ("continue_from_last_run", continue_from_last_run),
            ("propagate_exceptions", propagate_exceptions),
            ("force_pickle", force_pickle),
        ]:
            if not isinstance(value, bool):
                raise UsageError(f"{keyword} must be True or False, but got {value!r}")
        if use_dashboard not in (None, True, False):
            raise UsageError(f"use_dashboard must be True, False or None, but got {use_dashboard!r}")
        plan = dispatch_of(specification_runner, num_parallel, backend, context_type, multiprocessing_lib)
        smallab2 = isinstance(experiment, ExperimentBase)
        if smallab2 and isinstance(specifications, Iterable) and not isinstance(specifications, str | bytes | dict):
            specifications = [specification.lists_for_tuples(item) for item in specifications]
        validated = specification.validate_all(specifications)
        for callback in self._callbacks:
            callback.set_experiment_name(name)
        with ExitStack() as stack:
            if isinstance(experiment, ExperimentBase):
                check_runnable(experiment)
                folder = RunFolder.for_call(self.experiment_folder, name)
                main: Runnable = self._smallab2_task(experiment, folder, plan, use_dashboard is False, stack)
                stack.enter_context(smallab2_files(self.store, folder, force_pickle))
            else:
                main = experiment_main(experiment)
            batch = BatchRun(
                store=self.store,
                database=self.url,
                name=name,
                main=main,
                lease_seconds=self.lease_seconds,
                num_parallel=plan.num_parallel,
                backend=plan.backend,
                show_progress=show_progress and plan.show_progress is not False,
                hooks=dataclasses.replace(self._hooks),
                stop_at_first_failure=propagate_exceptions,
                dashboard=use_dashboard is True,
                run_name=experiment.get_name if isinstance(experiment, ExperimentBase) else str,
                keep_key_order=smallab2,
            )
            summary = batch.run(validated, rerun_all=not continue_from_last_run)
        if specification_runner is not None:
            specification_runner.finish(summary.completed, summary.failed, summary.exceptions)
        return summary

    def _smallab2_task(
        self, experiment: ExperimentBase, folder: RunFolder, plan: Dispatch, echo_logs: bool, stack: ExitStack
    ) -> Smallab2Task:
        """The task that runs a 2.x experiment's specifications; its resource locks live as long as ``stack``."""
        resources = None
        if plan.resources is not None:
            resources = ResourceSlots.create(plan.resources)
            stack.callback(resources.remove)
        return Smallab2Task(experiment, folder, echo_logs, resources)

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
        worker_writes.unshare_store(self.url, self.store)
        self.engine.dispose()

    def __enter__(self) -> ExperimentRunner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
