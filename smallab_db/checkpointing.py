"""Running a checkpointed experiment step by step in a worker, checkpointed into the database between steps.

A run starts from its newest checkpoint that still unpickles, else from ``initialize``; then ``step`` is called
until the experiment is done, and after every ``steps_before_checkpoint()`` steps (and after ``initialize``) the
whole experiment object is pickled into the ``checkpoints`` table; the :data:`KEPT_CHECKPOINTS` newest are kept, and
the recorder removes them when the run completes. A failed run keeps them, so that running it again resumes.

Objects are pickled as smallab 2.x did, with ``dill`` where plain pickle cannot (a lambda, a class of the script):
plain pickle first, since it is faster and loads anywhere the classes import. Every write goes through the run's
:class:`~smallab_db.worker_writes.RunLink`, so a worker whose claim was lost stops at its next checkpoint.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from typing import Any, cast

import dill

from smallab_db import specification as specifications
from smallab_db.codec import canonical_json, queryable_json
from smallab_db.errors import ExperimentError, SpecError
from smallab_db.experiment import Specification
from smallab_db.experiment_kinds import (
    CheckpointedExperiment,
    OverlappingOutputCheckpointedExperiment,
    OverlappingOutputCheckpointedExperimentReturnValue,
)
from smallab_db.records import ImportedRun
from smallab_db.worker_writes import RunLink

KEPT_CHECKPOINTS = 3  # as smallab 2.x's rolled backups
PROGRESS_INTERVAL_SECONDS = 0.5  # progress between checkpoints is stored at most this often

Stepped = CheckpointedExperiment | OverlappingOutputCheckpointedExperiment


def run_steps(experiment: Stepped, specification: Specification, link: RunLink, logger: logging.Logger) -> Any:
    """Run a checkpointed experiment to its end and return its result: the dict :meth:`step` returned, or ``[]``
    for an overlapping-output experiment (its outputs are stored on the way).

    Args:
        experiment: the run's own copy, its names and folders set; replaced by the newest readable checkpoint.
        specification: what to run.
        link: the run's link to the database.
        logger: the run's logger.

    Raises:
        ExperimentError: the experiment cannot be pickled, or a step returned something that is not a result.
        ClaimLostError: another runner took the run over.
    """
    restored = _newest_readable(link, logger)
    steps = _Steps(link)
    if restored is None:
        experiment.initialize(specification)
        steps.finished_one(experiment)
    else:
        restored.__dict__.update(_run_settings(experiment))
        experiment = restored
    while True:
        returned = experiment.step()
        if isinstance(experiment, OverlappingOutputCheckpointedExperiment):
            if isinstance(returned, OverlappingOutputCheckpointedExperimentReturnValue):
                steps.progress(returned.progress, returned.max_iterations)
                if returned.should_serialize:
                    link.store_outputs([_output_run(returned)])
                if not returned.should_continue:
                    return []
            elif returned is not None and not isinstance(returned, tuple):
                raise ExperimentError(
                    f"step() of an overlapping-output experiment must return an "
                    f"OverlappingOutputCheckpointedExperimentReturnValue, (progress, total) or None, but returned "
                    f"{type(returned).__name__} {returned!r:.80}"
                )
        elif returned is not None and not isinstance(returned, tuple):
            return returned
        if isinstance(returned, tuple):
            steps.progress(*_progress_pair(returned))
        steps.finished_one(experiment)


class _Steps:
    """Counts steps towards the next checkpoint, and stores progress now and then."""

    def __init__(self, link: RunLink) -> None:
        self._link = link
        self._since_checkpoint = 0
        self._progress: tuple[float, float | None] | None = None
        self._progress_stored_at = 0.0

    def progress(self, progress: Any, total: Any) -> None:
        """Note a step's progress; what is not a number is not stored (smallab 2.x only displayed it)."""
        done = _number(progress)
        if done is None:
            return
        self._progress = (done, _number(total))
        if time.monotonic() - self._progress_stored_at >= PROGRESS_INTERVAL_SECONDS:
            self._store_progress()

    def finished_one(self, experiment: Stepped) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= experiment.steps_before_checkpoint():
            self._since_checkpoint = 0
            self._link.save_checkpoint(pickle_state(experiment), KEPT_CHECKPOINTS)
            self._store_progress()

    def _store_progress(self) -> None:
        if self._progress is not None:
            self._link.report_progress(*self._progress)
            self._progress_stored_at = time.monotonic()


def pickle_state(experiment: object) -> bytes:
    """Pickle an experiment object, with dill when plain pickle cannot.

    Raises:
        ExperimentError: neither can, naming the attribute that holds what cannot be pickled.
    """
    try:
        return pickle.dumps(experiment, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    try:
        return cast(bytes, dill.dumps(experiment, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as error:
        raise ExperimentError(_unpicklable_message(experiment, error)) from error


def _unpicklable_message(experiment: object, error: Exception) -> str:
    culprits = []
    for name, value in getattr(experiment, "__dict__", {}).items():
        try:
            dill.dumps(value)
        except Exception as reason:
            culprits.append(f"self.{name} ({type(value).__name__}: {type(reason).__name__}: {reason})")
    where = f" because of {', '.join(culprits)}" if culprits else f" ({type(error).__name__}: {error})"
    return (
        f"the experiment cannot be checkpointed: {type(experiment).__name__} cannot be pickled, even with dill"
        f"{where}; keep only picklable state on self (numbers, arrays, lists, dicts, objects of importable classes) "
        "and rebuild the rest in step()"
    )


def _newest_readable(link: RunLink, logger: logging.Logger) -> Any:
    """Return the newest checkpoint of the run that unpickles, or None; the others are named in the run's log."""
    for age, state in enumerate(link.checkpoint_states()):
        try:
            restored = dill.loads(state)
        except Exception as error:  # any damage: a class that no longer imports, a truncated blob
            logger.warning("checkpoint %d (newest is 0) cannot be loaded (%s: %s)", age, type(error).__name__, error)
            continue
        logger.info("resuming from checkpoint %d (newest is 0)", age)
        return restored
    return None


def _run_settings(experiment: object) -> dict[str, Any]:
    """What the runner set on this run's copy (names, folders, a resource): a restored checkpoint takes them over."""
    names = (
        "logger",
        "logging_folder",
        "experiment_local_storage_folder",
        "specification_local_storage_folder",
        "resource",
    )
    return {name: value for name, value in vars(experiment).items() if name in names}


def _progress_pair(returned: tuple[Any, ...]) -> tuple[Any, Any]:
    return (returned[0], returned[1]) if len(returned) == 2 else (None, None)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _output_run(output: OverlappingOutputCheckpointedExperimentReturnValue) -> ImportedRun:
    """The completed run an output becomes.

    Raises:
        ExperimentError: its specification is not a JSON object, or its result not a picklable dict.
    """
    specification = specifications.lists_for_tuples(output.specification)
    try:
        specifications.validate_specification(specification)
    except SpecError as error:
        raise ExperimentError(f"an output's specification cannot be stored: {error}") from error
    if not isinstance(output.return_value, dict):
        raise ExperimentError(
            f"an output's return_value must be a dict, but got {type(output.return_value).__name__} "
            f"{output.return_value!r:.80}"
        )
    try:
        result_pickle = pickle.dumps(output.return_value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise ExperimentError(
            f"an output's return_value cannot be pickled ({type(error).__name__}: {error})"
        ) from error
    canonical = canonical_json(specification)
    return ImportedRun(
        specifications.hash_canonical(canonical), canonical, result_pickle, queryable_json(output.return_value)
    )
