"""Runner processes sharing one SQLite file and one batch, against one serial runner measured in the same run.

Usage: python benchmarks/bench_many_runners.py [--exits-in-window] [N ...]   (default 20000 100000)

For each N, and for 1, 2, 4 and 8 runner processes started together on the same batch of N trivial experiments,
prints the aggregate experiments/s (N over the time from the start signal until every runner has returned from
``run`` and closed its runner), its ratio to one serial runner, how evenly the runners shared the batch, and the
largest peak memory of a runner. The start signal reaches every runner at once: each waits to read a pipe whose
writing end the benchmark then closes. Imports happen before it, and the interpreters' exits after a stop signal
given the same way once every runner has reported: a runner that finished first would otherwise tear its
interpreter down (0.05-0.15 s of CPU, the garbage collector walking the heap) while the others still run, which
``--exits-in-window`` measures instead. Every figure, the serial reference's too, is the best of ROUNDS rounds that
take turns, so that a moment when the machine is busy elsewhere slows one round of one figure, not the ratio; the
median of the rounds' own ratios (each round measures the serial reference just before) is printed beside it, as a
figure that one lucky round cannot move. The two default sizes tell the costs of starting together (one runner
registers while the others wait, each runner's chunks grow from one run, the last chunks are shared) from the pace
once every runner is running: those costs weigh on a batch of 20,000 trivial experiments, under a second of work,
and hardly on one of 100,000. Runs this short are executed a core at a time (see smallab_db/core_slots.py): with
more runners than cores, most run one run or none, which "runs each ran" shows.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5
RUNNER_COUNTS = (1, 2, 4, 8)

RUNNER = """
import json, os, resource, sys
from smallab_db import ExperimentRunner

def trivial(specification):
    return {"x": specification["seed"]}

path, n, start_signal, stop_signal = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
runner = ExperimentRunner(path)
specifications = [{"seed": seed} for seed in range(n)]
print("ready", flush=True)
os.read(start_signal, 1)  # returns when the benchmark closes the pipe's other end: every runner at once
summary = runner.run("shared", specifications, trivial, show_progress=False)
runner.close()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ran": len(summary.completed), "peak_mb": peak_mb}), flush=True)
os.read(stop_signal, 1)  # exits once every runner has reported (at once with --exits-in-window)
"""


def run_together(folder: Path, processes: int, n: int, exits_in_window: bool) -> tuple[float, list[int], float]:
    """Start ``processes`` runners on one new file, release them at once; return (experiments/s, runs each ran,
    largest peak MB)."""
    path = tempfile.mkstemp(suffix=".db", dir=folder)[1]
    Path(path).unlink()
    script = folder / "runner.py"
    script.write_text(RUNNER)
    start_read, start = os.pipe()
    stop_read, stop = os.pipe()
    read_ends = (start_read, stop_read)  # the runners wait to read these
    unsent = [start, stop]  # the writing ends still open: closing one gives its signal

    def send(signal: int) -> None:
        unsent.remove(signal)
        os.close(signal)

    try:
        children = [
            subprocess.Popen(
                [sys.executable, str(script), path, str(n), *map(str, read_ends)],
                stdout=subprocess.PIPE,
                text=True,
                pass_fds=read_ends,
            )
            for _ in range(processes)
        ]
    finally:
        for read_end in read_ends:
            os.close(read_end)
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        began = time.perf_counter()
        send(start)
        if exits_in_window:
            send(stop)
        reports = []
        for child in children:
            assert child.stdout is not None
            reports.append(json.loads(child.stdout.readline()))
        elapsed = time.perf_counter() - began
    finally:
        for signal in list(unsent):
            send(signal)
        for child in children:
            try:
                child.wait(timeout=60)
            finally:
                child.kill()
    ran = [report["ran"] for report in reports]
    assert sum(ran) == n, ran
    return n / elapsed, ran, max(report["peak_mb"] for report in reports)


def main() -> None:
    arguments = sys.argv[1:]
    exits_in_window = "--exits-in-window" in arguments
    sizes = [int(argument) for argument in arguments if argument != "--exits-in-window"]
    for n in sizes or [20_000, 100_000]:
        measure(n, exits_in_window)


def measure(n: int, exits_in_window: bool) -> None:
    """Print the figures of one batch size."""
    serial_rounds: list[float] = []
    rounds: dict[int, list[tuple[float, list[int], float]]] = {processes: [] for processes in RUNNER_COUNTS}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for _ in range(ROUNDS):
            serial_rounds.append(run_together(folder, 1, n, exits_in_window)[0])
            for processes in RUNNER_COUNTS:
                rounds[processes].append(run_together(folder, processes, n, exits_in_window))
    serial = max(serial_rounds)
    exits = "runners exiting as they report" if exits_in_window else "exits after the last report"
    print(f"one serial runner: {serial:,.0f} experiments/s, N={n}, best of {ROUNDS} ({exits})")
    for processes in RUNNER_COUNTS:
        rate, ran, peak_mb = max(rounds[processes])
        paired = statistics.median(
            measured[0] / reference for measured, reference in zip(rounds[processes], serial_rounds, strict=True)
        )
        print(
            f"  {processes} runners: {rate:,.0f} experiments/s in all (best of {ROUNDS}), ratio to one serial runner "
            f"{rate / serial:.2f} (median of the rounds' ratios {paired:.2f}); runs each ran {min(ran)}..{max(ran)}; "
            f"peak memory of a runner {peak_mb:,.0f} MB"
        )


if __name__ == "__main__":
    main()
