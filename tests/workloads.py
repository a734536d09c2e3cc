"""Experiments used by the tests, importable by worker processes, and a runner script for subprocess tests.

As a script: ``python workloads.py DATABASE BATCH COUNT [--parallel K] [--sleep S] [--markers DIR] [--lease L]
[--fail-seed N] [--wait-for FILE] [--scheduler ADDRESS]`` runs specifications ``{"seed": 0 … COUNT-1}`` (on the Dask
scheduler at ADDRESS when given, as many at a time as its workers have threads). With ``--markers`` each execution
creates a new file ``DIR/<seed>.<uuid>`` when it starts and ``DIR/finished-<seed>-<uuid>`` holding the time when
it returns: the tests count executions by these side effects, not by the database.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from smallab_db import Experiment, ExperimentRunner, RunSummary


class Square(Experiment):
    """Returns the square of the seed."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        return {"square": specification["seed"] ** 2}


class FailOnOdd(Experiment):
    """Raises ValueError for odd seeds."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] % 2:
            raise ValueError(f"odd seed {specification['seed']}")
        return {"seed": specification["seed"]}


class Unpicklable(Experiment):
    """Returns a result holding a lambda, which pickle refuses."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        return {"function": lambda: specification}


class NotADict(Experiment):
    """Returns a list instead of a dict."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        return [specification["seed"]]  # type: ignore[return-value]


class UnpicklableError(Exception):
    """An exception holding a lock, which pickle refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class RaisesUnpicklable(Experiment):
    """Raises an exception that cannot be pickled."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        raise UnpicklableError("carries a lock")


class ReportsPid(Experiment):
    """Returns the process id that ran it, after an optional sleep."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        time.sleep(specification.get("sleep", 0))
        return {"pid": os.getpid(), "seed": specification["seed"]}


class Marking(Experiment):
    """Leaves a marker file when an execution starts and one when it finishes; can fail one seed. A specification's
    ``sleep`` replaces the experiment's."""

    def __init__(self, markers: str | None, sleep: float, fail_seed: int | None = None) -> None:
        self.markers = markers
        self.sleep = sleep
        self.fail_seed = fail_seed

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        seed = specification["seed"]
        if self.markers is not None:
            Path(self.markers, f"{seed}.{uuid.uuid4().hex}").write_text(str(os.getpid()))
        time.sleep(specification.get("sleep", self.sleep))
        if seed == self.fail_seed:
            raise RuntimeError(f"seed {seed} fails on purpose")
        finished = time.time()
        if self.markers is not None:
            Path(self.markers, f"finished-{seed}-{uuid.uuid4().hex}").write_text(repr(finished))
        return {"seed": seed, "pid": os.getpid(), "finished": finished}


class DiesOnSeed(Experiment):
    """Kills its own worker process for one seed: ``os._exit``, a segmentation fault, or SIGKILL."""

    def __init__(self, seed: int, how: str, pause: float = 0.05) -> None:
        self.seed = seed
        self.how = how
        self.pause = pause  # what each other run takes

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] == self.seed:
            if self.how == "exit":
                os._exit(3)
            if self.how == "segfault":
                import ctypes

                ctypes.string_at(0)
            if self.how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.pause)
        return {"seed": specification["seed"]}


def started_pids(markers: Path, seed: int) -> list[int]:
    """The process ids that started executing ``seed``, from its marker files (empty ones are being written)."""
    return [int(text) for marker in markers.glob(f"{seed}.*") if (text := marker.read_text())]


def executions(markers: Path) -> dict[int, int]:
    """Count the executions (started) of each seed from the marker files."""
    counts: dict[int, int] = {}
    for marker in markers.glob("*.*"):
        seed = int(marker.name.split(".")[0])
        counts[seed] = counts.get(seed, 0) + 1
    return counts


def finish_times(markers: Path) -> list[tuple[int, float]]:
    """Return ``(seed, time main returned)`` of every execution that finished."""
    finished = []
    for marker in markers.glob("finished-*"):
        text = marker.read_text()
        if text:  # empty when the process was killed between creating and writing it
            finished.append((int(marker.name.split("-")[1]), float(text)))
    return finished


def print_summary(summary: RunSummary) -> None:
    """Print the line the process tests read: how many runs completed, failed, were skipped and not stored."""
    print(
        f"completed={len(summary.completed)} failed={len(summary.failed)} skipped={summary.skipped} "
        f"not_stored={len(summary.not_stored)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("batch")
    parser.add_argument("count", type=int)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--markers")
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--fail-seed", type=int)
    parser.add_argument("--wait-for", help="start running only once this file exists (a start line for racers)")
    parser.add_argument("--scheduler", help="run on the Dask scheduler at this address")
    arguments = parser.parse_args()
    if arguments.scheduler:
        from distributed import Client

        Client(arguments.scheduler)  # the current client, which backend="dask" runs on
    runner = ExperimentRunner(arguments.database, lease_seconds=arguments.lease)
    runner.on_specification_failure(None)
    print("started", flush=True)
    while arguments.wait_for and not Path(arguments.wait_for).exists():
        time.sleep(0.01)
    summary = runner.run(
        arguments.batch,
        [{"seed": seed} for seed in range(arguments.count)],
        Marking(arguments.markers, arguments.sleep, arguments.fail_seed),
        num_parallel=None if arguments.scheduler else arguments.parallel,
        show_progress=False,
        backend="dask" if arguments.scheduler else None,
    )
    print_summary(summary)


if __name__ == "__main__":
    main()
