"""smallab 2.x's ``smallab.file_locations``: where the files of a batch are below ``experiment_runs``.

A run through the 2.x surface exports its batch there after every ``run`` call (see :mod:`smallab_db.run_folder`),
with run folders named by the specification's hash, so the helpers that name a run's files point at the export:
``experiments/<spec_hash>/run.json`` (or ``run.pkl`` with ``specification.json``). Checkpoints live in the database:
:func:`get_partial_save_directory` names 2.x's folder for them, which smallab-db does not write.
"""

from __future__ import annotations

import os
from typing import Any

from smallab_db.experiment import Specification
from smallab_db.experiment_kinds import ExperimentBase, IterativeExperiment
from smallab_db.layouts import smallab2
from smallab_db.layouts.batch_files import SPECIFICATION
from smallab_db.specification import lists_for_tuples, specification_hash

experiment_folder = "experiment_runs"


def get_save_directory(name: str) -> str:
    """The batch's folder: ``experiment_runs/<name>``."""
    return os.path.join(experiment_folder, name)


def get_experiment_save_directory(name: str) -> str:
    """The folder of the batch's run folders: ``experiment_runs/<name>/experiments``."""
    return os.path.join(get_save_directory(name), smallab2.EXPERIMENTS)


def get_save_file_directory(name: str, specification: Specification, experiment: Any = None) -> str:
    """The run folder of a specification in the export: ``experiments/<spec_hash>`` (tuples hashed as lists);
    ``experiment`` is accepted, as in 2.x, and not needed."""
    return os.path.join(get_experiment_save_directory(name), specification_hash(lists_for_tuples(specification)))


def get_json_file_location(name: str, specification: Specification, experiment: Any = None) -> str:
    """The run's ``run.json``, where its result is JSON."""
    return os.path.join(get_save_file_directory(name, specification, experiment), smallab2.RUN_JSON)


def get_pkl_file_location(name: str, specification: Specification, experiment: Any = None) -> str:
    """The run's ``run.pkl``, where its result is not JSON (or ``force_pickle`` was given)."""
    return os.path.join(get_save_file_directory(name, specification, experiment), smallab2.RUN_PICKLE)


def get_specification_file_location(name: str, specification: Specification, experiment: Any = None) -> str:
    """The ``specification.json`` beside a ``run.pkl``."""
    return os.path.join(get_save_file_directory(name, specification, experiment), SPECIFICATION)


def resolve_current_experiment_name(experiment: ExperimentBase, specification: Specification) -> str:
    """The run's name as 2.x named its folder: ``get_current_name`` for an iterative experiment, else ``get_name``."""
    if isinstance(experiment, IterativeExperiment):
        return experiment.get_current_name(specification)
    return experiment.get_name(specification)


def get_partial_save_directory(name: str, specification: Specification, experiment: ExperimentBase) -> str:
    """2.x's checkpoint folder, ``experiment_runs/<name>/checkpoints/<get_name>``; smallab-db keeps checkpoints in
    the database instead."""
    return os.path.join(get_save_directory(name), "checkpoints", experiment.get_name(specification))


def get_log_file(experiment: ExperimentBase, specification_id: str) -> str:
    """The log file of the run named ``specification_id`` in the experiment's logging folder."""
    return os.path.join(experiment.get_logging_folder(), specification_id + ".log")


def get_experiment_local_storage(name: str) -> str:
    """The folder shared by every run of the batch: ``experiment_runs/<name>/tmp``."""
    return os.path.join(get_save_directory(name), "tmp")


def get_specification_local_storage(name: str, specification: Specification, experiment: ExperimentBase) -> str:
    """A run's own folder: ``experiment_runs/<name>/tmp/<get_name>``."""
    return os.path.join(get_experiment_local_storage(name), experiment.get_name(specification))


def get_dashboard_file(name: str) -> str:
    """2.x's dashboard event file; smallab-db's dashboard reads the database and writes no file."""
    return os.path.join(get_save_directory(name), ".dashboard.csv")


def get_specification_save_dir(name: str) -> str:
    """2.x's folder of specification files, which neither 2.3.1 nor smallab-db writes."""
    return os.path.join(get_save_directory(name), "specifications")
