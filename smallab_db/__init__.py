"""smallab-db: smallab's easy experiment API, with every run kept in a SQL database."""

from __future__ import annotations

from smallab_db.errors import (
    DatabaseError,
    ExperimentError,
    ExportError,
    MissingDependencyError,
    QueryError,
    RemoteExperimentError,
    ResultNotStoredError,
    SchemaError,
    SmallabError,
    SpecError,
    TransientDatabaseError,
    UnreadableResultWarning,
    UsageError,
    WorkerDiedError,
)
from smallab_db.experiment import Experiment
from smallab_db.generators import MultiComputerGenerator, SpecificationGenerator
from smallab_db.runner import ExperimentRunner
from smallab_db.specification import specification_hash
from smallab_db.summary import RunSummary

__version__ = "0.1.0"

__all__ = [
    # running experiments
    "Experiment",
    "ExperimentRunner",
    "RunSummary",
    # specifications
    "SpecificationGenerator",
    "MultiComputerGenerator",
    "specification_hash",
    # errors and warnings
    "SmallabError",
    "SpecError",
    "ExperimentError",
    "UsageError",
    "DatabaseError",
    "TransientDatabaseError",
    "SchemaError",
    "ExportError",
    "RemoteExperimentError",
    "WorkerDiedError",
    "MissingDependencyError",
    "QueryError",
    "ResultNotStoredError",
    "UnreadableResultWarning",
]
