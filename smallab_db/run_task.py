"""What a worker does to run one specification of a smallab 2.x experiment.

As smallab 2.x did, each run gets its own deep copy of the experiment, with its logger name
(``"smallab." + get_name(specification)``), its logging folder and its storage folders set, and, under
``SimpleFixedResourceAllocatorRunner``, a resource in ``self.resource``. What the run logs goes to its log file and
to the run's stored output (:mod:`smallab_db.run_output`). ``main`` runs a plain experiment; a checkpointed one runs
step by step (:mod:`smallab_db.checkpointing`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from smallab_db import checkpointing
from smallab_db.errors import ExperimentError
from smallab_db.execution import RunTask, check_result_is_dict
from smallab_db.experiment import Specification
from smallab_db.experiment_kinds import (
    CheckpointedExperiment,
    Experiment,
    ExperimentBase,
    OverlappingOutputCheckpointedExperiment,
)
from smallab_db.resource_slots import ResourceSlots
from smallab_db.run_folder import RunFolder
from smallab_db.run_output import RUN_LOGGERS, OutputTail, capturing
from smallab_db.worker_writes import RunLink


def check_runnable(experiment: ExperimentBase) -> None:
    """Raise :class:`ExperimentError` unless ``experiment`` is of a kind a run knows how to execute."""
    if not isinstance(experiment, Experiment | CheckpointedExperiment | OverlappingOutputCheckpointedExperiment):
        raise ExperimentError(
            f"{type(experiment).__name__} subclasses ExperimentBase but none of Experiment (implement main), "
            "CheckpointedExperiment or OverlappingOutputCheckpointedExperiment (implement initialize and step): "
            "subclass one of those"
        )


@dataclass(frozen=True)
class Smallab2Task(RunTask):
    """Runs specifications of a smallab 2.x experiment; pickled to each worker with the experiment.

    Attributes:
        experiment: the experiment given to ``run``; each run deep-copies it.
        folder: the call's ``experiment_runs/<name>`` paths.
        echo_logs: also print what runs log to standard error (``use_dashboard=False``, as in 2.x).
        resources: the resources to hand out, if any.
    """

    experiment: ExperimentBase
    folder: RunFolder
    echo_logs: bool
    resources: ResourceSlots | None = None

    def check_result(self, result: Any) -> None:
        if isinstance(self.experiment, OverlappingOutputCheckpointedExperiment) and result == []:
            return  # the run of the given specification completes with [] once its outputs are stored, as in 2.x
        check_result_is_dict(result)

    def run(self, link: RunLink, specification: Specification, output: OutputTail) -> Any:
        experiment = copy.deepcopy(self.experiment)
        run_name = experiment.get_name(specification)
        logger_name = f"{RUN_LOGGERS}.{run_name}"
        experiment.set_logger_name(logger_name)
        experiment.set_logging_folder(self.folder.logs_folder)
        experiment.set_experiment_local_storage(self.folder.experiment_storage)
        experiment.set_specification_local_storage(self.folder.specification_storage(run_name))
        try:
            with capturing(logger_name, output, self.folder.log_file(run_name), self.echo_logs):
                try:
                    with self._resource(experiment):
                        return self._execute(experiment, specification, link, logging.getLogger(logger_name))
                except BaseException:
                    logging.getLogger(logger_name).error("Specification Failure", exc_info=True)
                    raise
        except BaseException:
            self.folder.keep_failed_log(run_name)
            raise

    @contextmanager
    def _resource(self, experiment: ExperimentBase) -> Iterator[None]:
        if self.resources is None:
            yield
            return
        with self.resources.holding() as resource:
            experiment.resource = resource  # type: ignore[attr-defined]  # where 2.x put it
            yield

    @staticmethod
    def _execute(
        experiment: ExperimentBase, specification: Specification, link: RunLink, logger: logging.Logger
    ) -> Any:
        if isinstance(experiment, CheckpointedExperiment | OverlappingOutputCheckpointedExperiment):
            return checkpointing.run_steps(experiment, specification, link, logger)
        assert isinstance(experiment, Experiment), "check_runnable() let only runnable kinds in"
        return experiment.main(specification)
