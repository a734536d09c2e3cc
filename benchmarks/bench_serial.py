"""Serial throughput of trivial experiments, as ratios against raw SQLite measured in the same run.

Usage: python benchmarks/bench_serial.py [N] [RECHECK_N]   (defaults 10000 and 100000)

Prints experiments/s for a first run of N specifications, completed specifications re-checked per second for a
re-run of RECHECK_N, the raw-SQLite baseline (executemany of the same rows), and the peak memory of the process.
Then the cost of keeping each run's output: N runs of an experiment printing one line (to a standard output sent to
/dev/null) against N runs of the trivial one, each measured three times, best of three.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from smallab_db import ExperimentRunner


def trivial(specification: dict) -> dict:
    return {"x": specification["seed"]}


def printing(specification: dict) -> dict:
    print("seed", specification["seed"])
    return {"x": specification["seed"]}


def raw_sqlite_rows_per_second(path: Path, n: int) -> float:
    """Insert n runs and then update them with results: the least any store has to do, without a framework."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, spec_hash TEXT UNIQUE, specification TEXT, status TEXT, "
        "result BLOB, result_json TEXT)"
    )
    start = time.perf_counter()
    rows = []
    for seed in range(n):
        text = json.dumps({"seed": seed}, sort_keys=True, separators=(",", ":"))
        rows.append((hashlib.sha256(text.encode()).hexdigest(), text))
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO runs (spec_hash, specification, status) VALUES (?, ?, 'pending')", rows)
    connection.execute("COMMIT")
    results = [(pickle.dumps({"x": seed}), json.dumps({"x": seed}), seed + 1) for seed in range(n)]
    connection.execute("BEGIN")
    connection.executemany("UPDATE runs SET status='completed', result=?, result_json=? WHERE id=?", results)
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    recheck_n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        baseline = raw_sqlite_rows_per_second(Path(folder) / "raw.db", n)
        runner = ExperimentRunner(Path(folder) / "bench.db")
        specifications = [{"seed": seed} for seed in range(n)]
        start = time.perf_counter()
        summary = runner.run("first", specifications, trivial, show_progress=False)
        first = n / (time.perf_counter() - start)
        assert len(summary.completed) == n

        big = [{"seed": seed} for seed in range(recheck_n)]
        runner.run("recheck", big, trivial, show_progress=False)
        start = time.perf_counter()
        summary = runner.run("recheck", big, trivial, show_progress=False)
        recheck_seconds = time.perf_counter() - start
        assert summary.skipped == recheck_n
        quiet_rate, printing_rate = output_rates(runner, n)
        runner.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"raw SQLite baseline: {baseline:,.0f} rows/s (insert + result update, N={n})")
    print(f"first run: {first:,.0f} experiments/s serial, N={n}; ratio to baseline {first / baseline:.3f}")
    print(
        f"re-run: {recheck_n:,} completed specifications re-checked in {recheck_seconds:.3f} s "
        f"({recheck_n / recheck_seconds:,.0f}/s); ratio to baseline {recheck_n / recheck_seconds / baseline:.3f}"
    )
    print(f"peak memory: {peak_mb:,.0f} MB")
    print(
        f"output kept: {printing_rate:,.0f} experiments/s printing one line against {quiet_rate:,.0f}/s printing "
        f"nothing (best of 3, N={n}); printing costs {100 * (1 - printing_rate / quiet_rate):.1f}%"
    )


def output_rates(runner: ExperimentRunner, n: int) -> tuple[float, float]:
    """Experiments/s of the trivial experiment and of one printing a line (its output kept), best of three each."""
    rates: dict[str, list[float]] = {"quiet": [], "printing": []}
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for attempt in range(3):
            for name, experiment in [("quiet", trivial), ("printing", printing)]:
                specifications = [{"seed": seed} for seed in range(n)]
                start = time.perf_counter()
                runner.run(f"{name}-{attempt}", specifications, experiment, show_progress=False)
                rates[name].append(n / (time.perf_counter() - start))
    return max(rates["quiet"]), max(rates["printing"])


if __name__ == "__main__":
    main()
