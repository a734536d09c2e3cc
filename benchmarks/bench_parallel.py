"""Parallel throughput against plain joblib on the same function, measured in the same run.

Usage: python benchmarks/bench_parallel.py [N_TRIVIAL] [N_CPU]   (defaults 20000 and 200)

Workers are started, and have imported smallab-db in a first call (whose rate is printed), before the figures below
are measured. For k = 1, 2 and every core, with loky:
- trivial experiments (``{"x": spec["seed"]}``): smallab-db's experiments/s, the serial rate of smallab-db in the
  same run, each the best of ROUNDS rounds that take turns, and plain ``joblib.Parallel(n_jobs=k)`` on the same
  function;
- 20 ms CPU-bound experiments: smallab-db's speed-up over its own k=1 run, against joblib's over a plain loop;
- what the calling process spends per run (its own CPU time, in microseconds, while the workers compute).
Peak memory of the process is printed last.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed

from smallab_db import ExperimentRunner

ROUNDS = 3


def trivial(specification: dict[str, Any]) -> dict[str, Any]:
    return {"x": specification["seed"]}


def cpu_bound(specification: dict[str, Any]) -> dict[str, Any]:
    """About 20 ms of pure-Python arithmetic."""
    deadline = time.thread_time() + 0.02
    total = 0
    while time.thread_time() < deadline:
        total += sum(range(1000))
    return {"x": specification["seed"], "total": total}


def smallab_db_rate(folder: Path, function: Any, n: int, k: int) -> tuple[float, float]:
    """Return (runs/s, calling-process CPU µs per run) of a first run of n specifications with num_parallel=k."""
    runner = ExperimentRunner(tempfile.mkstemp(suffix=".db", dir=folder)[1])
    specifications = [{"seed": seed} for seed in range(n)]
    start, cpu_start = time.perf_counter(), time.process_time()
    summary = runner.run("parallel", specifications, function, num_parallel=k, show_progress=False)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert len(summary.completed) == n
    runner.close()
    return n / elapsed, cpu / n * 1e6


def joblib_rate(function: Any, n: int, k: int) -> float:
    """Return the runs/s of plain joblib (or a plain loop for k=1) on the same function."""
    specifications = [{"seed": seed} for seed in range(n)]
    start = time.perf_counter()
    if k == 1:
        results = [function(specification) for specification in specifications]
    else:
        results = Parallel(n_jobs=k, backend="loky")(delayed(function)(spec) for spec in specifications)
    assert len(results) == n
    return n / (time.perf_counter() - start)


def main() -> None:
    n_trivial = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    n_cpu = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    cores = os.cpu_count() or 1
    ks = sorted({1, 2, cores})
    Parallel(n_jobs=cores)(delayed(trivial)({"seed": 0}) for _ in range(cores))  # start loky's workers once
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        cold, _ = smallab_db_rate(folder, trivial, n_trivial, cores)
        print(f"the first call, workers importing smallab-db: {cold:,.0f}/s, N={n_trivial}, k={cores}")
        serial_rounds: list[float] = []
        rounds: dict[int, list[tuple[float, float]]] = {k: [] for k in ks}
        for _ in range(ROUNDS):  # taking turns, so that a busy moment slows one round of one figure, not the ratio
            serial_rounds.append(smallab_db_rate(folder, trivial, n_trivial, 1)[0])
            for k in ks:
                rounds[k].append(smallab_db_rate(folder, trivial, n_trivial, k))
        serial = max(serial_rounds)
        print(f"trivial experiments, N={n_trivial}, {cores} cores; serial smallab-db {serial:,.0f}/s, best of {ROUNDS}")
        for k in ks:
            rate = max(rate for rate, _ in rounds[k])
            cpu_per_run = statistics.median(cpu for _, cpu in rounds[k])
            reference = joblib_rate(trivial, n_trivial, k)
            print(
                f"  k={k}: smallab-db {rate:,.0f}/s (best of {ROUNDS}; ratio to its serial rate {rate / serial:.2f}, "
                f"to joblib {rate / reference:.3f}); joblib {reference:,.0f}/s; calling process {cpu_per_run:.0f} µs "
                "CPU per run (median)"
            )
        own_serial, _ = smallab_db_rate(folder, cpu_bound, n_cpu, 1)
        loop = joblib_rate(cpu_bound, n_cpu, 1)
        print(f"20 ms CPU-bound experiments, N={n_cpu}")
        for k in ks:
            rate, cpu_per_run = smallab_db_rate(folder, cpu_bound, n_cpu, k)
            reference = joblib_rate(cpu_bound, n_cpu, k)
            speedup, joblib_speedup = rate / own_serial, reference / loop
            print(
                f"  k={k}: smallab-db speed-up {speedup:.2f}x, joblib {joblib_speedup:.2f}x "
                f"(ratio {speedup / joblib_speedup:.3f}); calling process {cpu_per_run:.0f} µs CPU per run"
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
