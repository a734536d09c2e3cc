"""Runner processes sharing one SQLite file and one batch, against one serial runner measured in the same run.

Usage: python benchmarks/bench_many_runners.py [N ...]   (default 20000 100000)

For each N, and for 1, 2, 4 and 8 runner processes started together on the same batch of N trivial experiments,
prints the aggregate experiments/s (N over the time from the start signal until every runner has returned from
``run``, closed its runner and reported), its ratio to one serial runner, how evenly the runners shared the batch,
and the largest peak memory of a runner. The start signal reaches every runner at once: each waits to read a pipe
whose writing end the benchmark then closes. Imports happen before it, as each runner pays them, and each figure is
measured twice: with the runners' exits after the window (they wait for a stop signal given the same way once every
runner has reported), which is the library's work alone, and with each runner exiting as soon as it has reported,
which is what a user waiting for the batch sees but for the last runner's own exit: the runners that finish first
tear their interpreters down (0.05-0.15 s of CPU each, the garbage collector walking the heap as Python exits)
while the last ones still work.
Every figure, the serial reference's too, is the best of ROUNDS rounds that take turns, so that a moment when the
machine is busy elsewhere slows one round of one figure, not the ratio; the median of the rounds' own ratios (each
round measures the serial reference just before) is printed beside it, as a figure that one lucky round cannot move.
The two default sizes tell the costs of starting together (one runner registers while the others wait, each runner's
chunks grow from one run, the last chunks are shared) from the pace once every runner is running: those costs weigh
on a batch of 20,000 trivial experiments, under a second of work, and hardly on one of 100,000. Runs this short are
executed a core at a time (see smallab_db/core_slots.py): with more runners than cores, most run one run or none,
which "runs each ran" shows.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5
SILENCE_SECONDS = 600  # a runner silent for longer than this is stuck
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
os.read(stop_signal, 1)  # exits once every runner has reported, or at once, as the benchmark chooses
"""


Round = tuple[float, list[int], float]  # experiments/s, runs each runner ran, largest peak MB


def run_together(folder: Path, processes: int, n: int, exits_in_window: bool) -> Round:
    """Start ``processes`` runners on one new file and release them at once; with ``exits_in_window``, each exits as
    soon as it has reported, else once all have."""
    descriptor, path = tempfile.mkstemp(suffix=".db", dir=folder)
    os.close(descriptor)
    Path(path).unlink()
    script = folder / "runner.py"
    script.write_text(RUNNER)
    start_read, start = os.pipe()
    stop_read, stop = os.pipe()
    unsent = [start, stop]  # the writing ends still open: closing one gives its signal
    children: list[subprocess.Popen[str]] = []

    def send(writing_end: int) -> None:
        unsent.remove(writing_end)
        os.close(writing_end)

    try:
        for _ in range(processes):
            command = [sys.executable, str(script), path, str(n), str(start_read), str(stop_read)]
            children.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, text=True, pass_fds=(start_read, stop_read))
            )
        for child in children:
            ready = line_of(child)
            if ready != "ready\n":
                raise RuntimeError(f"a runner said {ready!r} instead of ready")
        began = time.perf_counter()
        send(start)
        if exits_in_window:
            send(stop)
        reports = [json.loads(line_of(child)) for child in children]
        elapsed = time.perf_counter() - began
    except BaseException:
        for child in children:
            child.kill()
        raise
    finally:
        for end in (start_read, stop_read, *unsent):
            os.close(end)  # the stop signal, if not given yet: every runner exits
        for child in children:
            try:
                child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
    ran = [report["ran"] for report in reports]
    assert sum(ran) == n, ran
    return n / elapsed, ran, max(report["peak_mb"] for report in reports)


def line_of(child: subprocess.Popen[str]) -> str:
    """The next line a runner writes, which must come within :data:`SILENCE_SECONDS`."""
    assert child.stdout is not None
    if not select.select([child.stdout], [], [], SILENCE_SECONDS)[0]:
        raise TimeoutError(f"runner {child.pid} wrote nothing for {SILENCE_SECONDS:.0f} s")
    return child.stdout.readline()


def main() -> None:
    for n in [int(argument) for argument in sys.argv[1:]] or [20_000, 100_000]:
        measure(n)


def measure(n: int) -> None:
    """Print the figures of one batch size: for several runners, with the exits after the window and in it (for one
    runner they are the same)."""
    serial_rounds: list[float] = []
    kinds = [(1, False)] + [(processes, exits) for processes in RUNNER_COUNTS[1:] for exits in (False, True)]
    rounds: dict[tuple[int, bool], list[Round]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for _ in range(ROUNDS):
            serial_rounds.append(run_together(folder, 1, n, exits_in_window=False)[0])
            for processes, exits_in_window in kinds:
                rounds[processes, exits_in_window].append(run_together(folder, processes, n, exits_in_window))
    serial = max(serial_rounds)
    print(f"one serial runner: {serial:,.0f} experiments/s, N={n}, best of {ROUNDS}")

    def figures(of: list[Round]) -> str:
        best = max(of)[0]
        paired = statistics.median(
            measured[0] / reference for measured, reference in zip(of, serial_rounds, strict=True)
        )
        return f"{best:,.0f} experiments/s in all, ratio to one serial runner {best / serial:.2f} (median {paired:.2f})"

    for processes in RUNNER_COUNTS:
        after, within = rounds[processes, False], rounds.get((processes, True), [])
        ran = max(after)[1]
        exiting = f"; exiting as they report: {figures(within)}" if within else ""
        print(
            f"  {processes} runners, exits after the window: {figures(after)}{exiting}; runs each ran "
            f"{min(ran)}..{max(ran)}; peak memory of a runner {max(peak for _, _, peak in after + within):,.0f} MB"
        )


if __name__ == "__main__":
    main()
