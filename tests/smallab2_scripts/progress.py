"""A smallab 2.x-style script: two slow checkpointed runs in threads, shown as ``use_dashboard`` (the first argument:
True, False or None) says. It prints ``finished`` when ``run`` returns."""

import logging
import sys
import time

from smallab_db.experiment_types.checkpointed_experiment import CheckpointedExperiment
from smallab_db.runner.runner import ExperimentRunner
from smallab_db.runner_implementations.joblib_runner import JoblibRunner


class Slow(CheckpointedExperiment):
    def initialize(self, specification):
        self.done = 0
        self.total = specification["steps"]

    def step(self):
        time.sleep(0.15)
        self.done += 1
        logging.getLogger(self.get_logger_name()).info("step %d", self.done)
        return {"done": self.done} if self.done == self.total else (self.done, self.total)

    def get_name(self, specification):
        return f"slow_{specification['seed']}"


if __name__ == "__main__":
    dashboard = {"True": True, "False": False, "None": None}[sys.argv[1]]
    specifications = [{"seed": seed, "steps": 20} for seed in range(2)]
    runner = ExperimentRunner()
    runner.run("progress", specifications, Slow(), specification_runner=JoblibRunner(2), use_dashboard=dashboard)
    print("finished")
