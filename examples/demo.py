"""smallab's demo, adapted to smallab-db: runs on the default SQLite file and reads results back from it.

Run it with `python examples/demo.py`; set $SMALLAB_DB to use another database.
"""

from __future__ import annotations

import random
from typing import Any

from smallab_db import Experiment, ExperimentRunner, SpecificationGenerator


class SimpleExperiment(Experiment):
    """Advances a seeded random number generator and returns the next number."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        generator = random.Random(specification["seed"])
        for _ in range(specification["num_calls"]):
            generator.random()
        return {"number": generator.random()}


def main() -> None:
    runner = ExperimentRunner()
    runner.on_specification_complete(lambda specification, result: print(specification, "->", result["number"]))

    specifications = [{"seed": 1, "num_calls": 1}, {"seed": 2, "num_calls": 1}]
    runner.run("random_number", specifications, SimpleExperiment())

    # A grid: the cross product of every list value, 8 seeds x 3 call counts.
    generated = SpecificationGenerator().generate({"seed": [1, 2, 3, 4, 5, 6, 7, 8], "num_calls": [1, 2, 3]})
    summary = runner.run("random_number_from_generator", generated, SimpleExperiment(), num_parallel=2)
    print(f"{len(summary.completed)} ran now, {summary.skipped} were already completed")

    print("Read back from", runner.url.database)
    for run in runner.results("random_number_from_generator")[:5]:
        print(run["specification"], run["result"]["number"])
    print("Exported the smallab folder tree to", runner.export("random_number_from_generator"))


if __name__ == "__main__":
    main()
