"""Peak memory of a large batch of small specifications, against the memory the specification list itself takes.

Usage: python benchmarks/bench_memory.py [N]   (default 1000000)

The runner streams: beyond the caller's own list it holds one claimed chunk, one group of outcomes waiting to be
stored, and the summary's lists of completed specifications. Prints the peak resident memory of the process and
its ratio to the memory measured after building the specification list alone.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from smallab_db import ExperimentRunner


def trivial(specification: dict) -> dict:
    return {"x": specification["seed"]}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        runner = ExperimentRunner(Path(folder) / "memory.db")
        specifications = [{"seed": seed, "learning_rate": 0.001, "model": "mlp"} for seed in range(n)]
        baseline = peak_mb()
        start = time.perf_counter()
        summary = runner.run("memory", specifications, trivial, show_progress=False)
        seconds = time.perf_counter() - start
        assert len(summary.completed) == n
        runner.close()
    print(f"baseline (interpreter + the list of {n:,} specifications): {baseline:,.0f} MB")
    print(f"run of {n:,} specifications: {seconds:.1f} s, {n / seconds:,.0f} experiments/s")
    print(f"peak memory: {peak_mb():,.0f} MB; ratio to baseline {peak_mb() / baseline:.2f}")


if __name__ == "__main__":
    main()
