"""The experiment runner: the smallab API over a database; each call of ``run`` is a :class:`BatchRun`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL
from tqdm import tqdm

from smallab_db import dispatch, export, frames, importing, migration, specification
from smallab_db.batch_run import BatchFailureHook, BatchHook, BatchRun, Hooks
from smallab_db.batches import check_batch_name
from smallab_db.database import resolve_url
from smallab_db.errors import UsageError
from smallab_db.experiment import Experiment, ExperimentMain, Specification, experiment_main
from smallab_db.importing import ImportReport
from smallab_db.reporting import FailureHook, SpecificationHook
from smallab_db.results import load_results
from smallab_db.schema import COMPLETED
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
        batch = BatchRun(
            store=self.store,
            name=name,
            main=experiment_main(experiment),
            lease_seconds=self.lease_seconds,
            num_parallel=num_parallel,
            backend=backend,
            show_progress=show_progress,
            hooks=dataclasses.replace(self._hooks),
        )
        return batch.run(specification.validate_all(specifications), rerun_all=not continue_from_last_run)

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
