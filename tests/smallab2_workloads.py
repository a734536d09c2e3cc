"""smallab 2.x-style experiments used by the tests, importable by worker processes, and a runner script.

As a script: ``python smallab2_workloads.py DATABASE BATCH MARKERS COUNT STEPS [--parallel K] [--sleep S]
[--lease L] [--cwd DIR]`` runs :class:`Counting` on specifications ``{"seed": 0 … COUNT-1, "steps": STEPS}``
(``--parallel`` K > 0 through ``MultiprocessingRunner(K)``, else ``MainRunner()``), and prints the summary.
Each executed step appends its count to ``MARKERS/<seed>``, so the tests see which steps ran, in which process.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from workloads import print_summary

from smallab_db.experiment_types.checkpointed_experiment import CheckpointedExperiment
from smallab_db.experiment_types.experiment import Experiment
from smallab_db.experiment_types.overlapping_output_experiment import (
    OverlappingOutputCheckpointedExperiment,
    OverlappingOutputCheckpointedExperimentReturnValue,
)
from smallab_db.name_helper.dict import dict2name
from smallab_db.runner.runner import ExperimentRunner
from smallab_db.runner_implementations.main_process_runner import MainRunner
from smallab_db.runner_implementations.multiprocessing_runner import MultiprocessingRunner


class WhereItRan(Experiment):
    """Returns the process and thread that ran it, after ``sleep`` seconds; logs a line; fails for ``"fail"``."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        logging.getLogger(self.get_logger_name()).info("running seed %s", specification["seed"])
        time.sleep(specification.get("sleep", 0))
        if specification.get("fail"):
            raise RuntimeError(f"seed {specification['seed']} fails on purpose")
        return {
            "seed": specification["seed"],
            "pid": os.getpid(),
            "thread": threading.get_ident(),
            "resource": getattr(self, "resource", None),
            "started": time.time() - specification.get("sleep", 0),
            "finished": time.time(),
        }

    def get_name(self, specification: dict[str, Any]) -> str:
        return dict2name(specification)


class Counting(CheckpointedExperiment):
    """Counts to ``steps``, one a step, appending each count to ``markers/<seed>`` (with the process id); fails at
    the step ``fail_at`` of the specification while the file ``markers/fail-<seed>`` exists, removing it."""

    def __init__(self, markers: str, sleep: float = 0.0) -> None:
        self.markers = markers
        self.sleep = sleep

    def initialize(self, specification: dict[str, Any]) -> None:
        self.seed = specification["seed"]
        self.steps = specification["steps"]
        self.fail_at = specification.get("fail_at")
        self.count = 0

    def step(self) -> Any:
        self.count += 1
        with open(Path(self.markers, str(self.seed)), "a") as markers:
            markers.write(f"{self.count} {os.getpid()}\n")
            markers.flush()
            os.fsync(markers.fileno())
        logging.getLogger(self.get_logger_name()).info("step %d of %d", self.count, self.steps)
        time.sleep(self.sleep)
        failing = Path(self.markers, f"fail-{self.seed}")
        if self.count == self.fail_at and failing.exists():
            failing.unlink()
            raise RuntimeError(f"step {self.count} fails on purpose")
        if self.count >= self.steps:
            return {"count": self.count, "seed": self.seed}
        return (self.count, self.steps)

    def get_name(self, specification: dict[str, Any]) -> str:
        return dict2name(specification)


class Producing(OverlappingOutputCheckpointedExperiment):
    """Counts to the last of ``outputs``; at each count in ``outputs`` produces the run
    ``{"seed": seed, "iterations": count}`` with result ``{"total": seed * count}``; fails at ``fail_at``."""

    def initialize(self, specification: dict[str, Any]) -> None:
        self.specification = specification
        self.count = 0

    def step(self) -> Any:
        self.count += 1
        if self.count == self.specification.get("fail_at"):
            raise RuntimeError(f"step {self.count} fails on purpose")
        outputs = self.specification["outputs"]
        if self.count not in outputs:
            return (self.count, outputs[-1])
        produced = {"seed": self.specification["seed"], "iterations": self.count}
        return OverlappingOutputCheckpointedExperimentReturnValue(
            self.count != outputs[-1], produced, {"total": self.specification["seed"] * self.count}, self.count, 9
        )

    def get_name(self, specification: dict[str, Any]) -> str:
        return dict2name(specification)


class HoldsGenerator(CheckpointedExperiment):
    """Keeps a generator on self, which neither pickle nor dill can save."""

    def initialize(self, specification: dict[str, Any]) -> None:
        self.numbers = (number for number in range(10))

    def step(self) -> Any:
        return {"first": next(self.numbers)}


def steps_run(markers: Path, seed: int) -> list[tuple[int, int]]:
    """Return ``(count, process id)`` of every step of ``seed`` that ran, in order."""
    path = markers / str(seed)
    if not path.exists():
        return []
    return [(int(count), int(pid)) for count, pid in (line.split() for line in path.read_text().splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("batch")
    parser.add_argument("markers")
    parser.add_argument("count", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("--parallel", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=60.0)
    arguments = parser.parse_args()
    runner = ExperimentRunner(arguments.database, lease_seconds=arguments.lease)
    runner.on_specification_failure(None)
    print("started", flush=True)
    specification_runner = MultiprocessingRunner(arguments.parallel) if arguments.parallel else MainRunner()
    import smallab2_workloads  # the class by its module's name, not __main__'s, so that tests can load checkpoints

    summary = runner.run(
        arguments.batch,
        [{"seed": seed, "steps": arguments.steps} for seed in range(arguments.count)],
        smallab2_workloads.Counting(arguments.markers, arguments.sleep),
        specification_runner=specification_runner,
        show_progress=False,
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
