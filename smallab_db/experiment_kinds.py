"""The experiments that smallab 2.x scripts subclass, with their 2.x names and methods.

The runner gives each run its own deep copy of the experiment, with its logger name, its logging folder and its
storage folders set (see :mod:`smallab_db.run_task`); what a checkpointed experiment does between checkpoints is in
:mod:`smallab_db.checkpointing`. These classes differ from :class:`smallab_db.Experiment`, whose ``main`` is called
on the object given to ``run`` and which gets none of this.
"""

from __future__ import annotations

import abc
import logging
import os
from typing import Any

from smallab_db.experiment import Result, Specification
from smallab_db.specification import specification_hash

ExpProgressTuple = tuple[float, float]


class LoggerName(str):
    """The name of a run's logger, ``"smallab." + get_name(specification)`` as smallab 2.x gives it.

    It is a ``str``, so ``logging.getLogger(name)`` and ``name[8:]`` work as in 2.x; it also logs like the logger
    itself (``name.info(...)``), as scripts written for older smallab versions expect of ``self.logger``.
    """

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(logging.getLogger(self), attribute)


class ExperimentBase(abc.ABC):  # noqa: B024 - abstract in 2.x only through get_name, which has a default here
    """What every smallab 2.x experiment has: a name per specification, a logger, and folders.

    The runner sets them before a run starts; the getters of the folders create them on demand.
    """

    logger: LoggerName
    logging_folder: str
    experiment_local_storage_folder: str
    specification_local_storage_folder: str

    def get_name(self, specification: Specification) -> str:
        """Name a specification: the logger is ``"smallab." + name``, the log file ``name + ".log"``.

        Override it for readable names (smallab 2.x required it); the default is the specification's hash.
        """
        return specification_hash(specification)

    def set_logger_name(self, logger: str) -> None:
        """Set the name of the logger that this run logs to (the runner does)."""
        self.logger = LoggerName(logger)

    def get_logger_name(self) -> LoggerName:
        """Return the name of this run's logger: ``logging.getLogger(self.get_logger_name()).info(...)``."""
        return self.logger

    def set_logging_folder(self, folder_loc: str) -> None:
        """Set the folder of this batch call's log files (the runner does)."""
        self.logging_folder = folder_loc

    def get_logging_folder(self) -> str:
        """Return the folder of this batch call's log files, creating it if needed."""
        os.makedirs(self.logging_folder, exist_ok=True)
        return self.logging_folder

    def set_experiment_local_storage(self, experiment_local_storage_folder: str) -> None:
        """Set the folder shared by every run of the batch (the runner does)."""
        self.experiment_local_storage_folder = experiment_local_storage_folder

    def get_experiment_local_storage(self) -> str:
        """Return a folder shared by every run of the batch (a cache, say), creating it if needed."""
        os.makedirs(self.experiment_local_storage_folder, exist_ok=True)
        return self.experiment_local_storage_folder

    def set_specification_local_storage(self, specification_local_storage_folder: str) -> None:
        """Set the folder of this run's own files (the runner does)."""
        self.specification_local_storage_folder = specification_local_storage_folder

    def get_specification_local_storage(self) -> str:
        """Return a folder for this run's own files (model weights, say), creating it if needed."""
        os.makedirs(self.specification_local_storage_folder, exist_ok=True)
        return self.specification_local_storage_folder


class Experiment(ExperimentBase):
    """A smallab 2.x experiment: implement :meth:`main`, which runs one specification and returns a result dict."""

    @abc.abstractmethod
    def main(self, specification: Specification) -> Result:
        """Run one specification and return its result, a picklable dict; raising fails the run."""


class HasCheckpoint:
    """How often a checkpointed experiment is checkpointed: after every :meth:`steps_before_checkpoint` steps."""

    steps_since_checkpoint = 0

    def steps_before_checkpoint(self) -> int:
        """How many steps go between checkpoints (and between initialize and the first one); 1 by default."""
        return 1

    def set_steps_since_checkpoint(self, steps_since_checkpoint: int) -> None:
        """Kept from smallab 2.x; the runner counts steps itself."""
        self.steps_since_checkpoint = steps_since_checkpoint

    def get_steps_since_checkpiont(self) -> int:  # smallab 2.x's spelling
        """Kept from smallab 2.x; the runner counts steps itself."""
        return self.steps_since_checkpoint


class IterativeExperiment:
    """An experiment that runs in steps; smallab 2.x used these for its dashboard and folder names."""

    def max_iterations(self, specification: Specification) -> float | None:
        """How many steps the specification takes, if known (None by default)."""
        return None

    def get_current_name(self, specification: Specification) -> str:
        """The name of the run at its current step; the experiment's :meth:`ExperimentBase.get_name` by default."""
        assert isinstance(self, ExperimentBase), "an iterative experiment is an ExperimentBase"
        return self.get_name(specification)


class CheckpointedExperiment(ExperimentBase, HasCheckpoint, IterativeExperiment):
    """An experiment run in steps, checkpointed into the database between them, so that a run that was killed
    resumes from its newest checkpoint on the next ``run``, on any machine sharing the database.

    :meth:`initialize` is called once, then :meth:`step` until it returns a result dict; returning None or
    ``(progress, total)`` means "not done". The whole object is pickled at each checkpoint: keep only picklable
    state on ``self``.
    """

    @abc.abstractmethod
    def initialize(self, specification: Specification) -> Any:
        """Set up the run's state on ``self``."""

    @abc.abstractmethod
    def step(self) -> ExpProgressTuple | Result | None:
        """Do some work; return None or ``(progress, total)`` to go on, or the result dict when done."""


class OverlappingOutputCheckpointedExperimentReturnValue:
    """What a step of an :class:`OverlappingOutputCheckpointedExperiment` returns.

    Args:
        should_continue: whether more steps follow.
        specification: the specification the output is stored under (usually not the one the run was given).
        return_value: the output's result dict.
        progress: the progress so far, out of ``max_iterations``.
        max_iterations: the total.
        should_serialize: whether to store this output as a completed run.
    """

    def __init__(
        self,
        should_continue: bool,
        specification: Specification,
        return_value: Result,
        progress: float,
        max_iterations: float,
        should_serialize: bool = True,
    ) -> None:
        self.should_continue = should_continue
        self.specification = specification
        self.return_value = return_value
        self.progress = progress
        self.max_iterations = max_iterations
        self.should_serialize = should_serialize


class OverlappingOutputCheckpointedExperiment(ExperimentBase, HasCheckpoint, IterativeExperiment):
    """A checkpointed experiment whose steps produce results for other specifications on the way (the same method
    after 100, 200 and 300 iterations, say): each output becomes a completed run of the batch as soon as it is
    produced. The specification given to the run completes with the result ``[]`` when a step says not to continue.
    """

    @abc.abstractmethod
    def initialize(self, specification: Specification) -> Any:
        """Set up the run's state on ``self``."""

    @abc.abstractmethod
    def step(self) -> ExpProgressTuple | OverlappingOutputCheckpointedExperimentReturnValue | None:
        """Do some work; return ``(progress, total)`` or None to go on, or an output."""
