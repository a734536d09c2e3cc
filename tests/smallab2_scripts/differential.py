"""A smallab 2.x script: it imports smallab 2.3.1. The differential test runs it as it is, and again with ``smallab``
renamed to ``smallab_db`` in its imports and nothing else changed, and compares what ``experiment_iterator`` yields.

Usage: ``python differential.py CASE OUTPUT``: runs the experiments of CASE (plain, processes, checkpointed,
overlapping, failing, unpicklable) in batch CASE, then writes the records ``experiment_iterator(CASE)`` yields to
OUTPUT as JSON (results that JSON cannot hold are written as their repr).
"""

import json
import logging
import random
import sys
from copy import deepcopy

from smallab.experiment_types.checkpointed_experiment import CheckpointedExperiment
from smallab.experiment_types.experiment import Experiment
from smallab.experiment_types.overlapping_output_experiment import (
    OverlappingOutputCheckpointedExperiment,
    OverlappingOutputCheckpointedExperimentReturnValue,
)
from smallab.name_helper.dict import dict2name
from smallab.runner.runner import ExperimentRunner
from smallab.runner_implementations.main_process_runner import MainRunner
from smallab.runner_implementations.multiprocessing_runner import MultiprocessingRunner
from smallab.specification_generator import SpecificationGenerator
from smallab.utilities.experiment_loading.experiment_loader import experiment_iterator


class Sampling(Experiment):
    def main(self, specification):
        logging.getLogger(self.get_logger_name()).info("sampling")
        generator = random.Random(specification["seed"])
        if specification.get("broken"):
            raise ValueError("this specification is broken")
        return {"sample": [generator.random() for _ in range(specification["size"])], "label": "x" * 3}

    def get_name(self, specification):
        return dict2name(specification)


class Walking(CheckpointedExperiment):
    def initialize(self, specification):
        self.generator = random.Random(specification["seed"])
        self.position = 0.0
        self.steps = 0
        self.limit = specification["steps"]

    def step(self):
        self.steps += 1
        self.position += self.generator.uniform(-1, 1)
        logging.getLogger(self.get_logger_name()).info("at %f", self.position)
        if self.steps == self.limit:
            return {"position": self.position, "steps": self.steps}
        return (self.steps, self.limit)

    def steps_before_checkpoint(self):
        return 2

    def max_iterations(self, specification):
        return specification["steps"]

    def get_name(self, specification):
        return dict2name(specification)

    def get_current_name(self, specification):
        return dict2name(specification)


class Averaging(OverlappingOutputCheckpointedExperiment):
    def initialize(self, specification):
        self.specification = specification
        self.generator = random.Random(specification["seed"])
        self.total = 0.0
        self.count = 0

    def step(self):
        self.count += 1
        self.total += self.generator.random()
        last = self.specification["checkpoints"][-1]
        if self.count not in self.specification["checkpoints"]:
            return (self.count, last)
        output = deepcopy(self.specification)
        del output["checkpoints"]
        output["count"] = self.count
        return OverlappingOutputCheckpointedExperimentReturnValue(
            self.count != last, output, {"mean": self.total / self.count}, self.count, last
        )

    def max_iterations(self, specification):
        return specification["checkpoints"][-1]

    def get_name(self, specification):
        return dict2name(specification)

    def get_current_name(self, specification):
        return dict2name(specification) + "_at-" + str(self.count)


class Crashing(Walking):
    def step(self):
        if self.steps == 2:
            raise RuntimeError("crashed in step 3")
        return super().step()


def numbers():
    yield from range(10)


class Unpicklable(Walking):
    def initialize(self, specification):
        super().initialize(specification)
        self.source = numbers()

    def step(self):
        returned = super().step()
        if isinstance(returned, dict):
            returned["source"] = self.source
        return returned


CASES = {
    "plain": (Sampling, {"seed": [1, 2, 3], "size": [2, 3]}, MainRunner),
    "processes": (Sampling, {"seed": [4, 5], "size": [1], "broken": [False, True]}, lambda: MultiprocessingRunner(2)),
    "checkpointed": (Walking, {"seed": [1, 2], "steps": [1, 4, 7]}, MainRunner),
    "overlapping": (Averaging, {"seed": [1, 2], "checkpoints": [[2, 5, 6]]}, MainRunner),
    "failing": (Crashing, {"seed": [1, 2], "steps": [2, 5]}, MainRunner),
    "unpicklable": (Unpicklable, {"seed": [1], "steps": [3]}, MainRunner),
}


if __name__ == "__main__":
    case, output = sys.argv[1], sys.argv[2]
    experiment, generation, specification_runner = CASES[case]
    specifications = SpecificationGenerator().generate(generation)
    runner = ExperimentRunner()
    runner.run(case, specifications, experiment(), specification_runner=specification_runner(), use_dashboard=False)
    runner.run(case, specifications, experiment(), specification_runner=specification_runner(), use_dashboard=False)
    records = [{"specification": run["specification"], "result": run["result"]} for run in experiment_iterator(case)]
    with open(output, "w") as file:
        json.dump(records, file, default=repr)
