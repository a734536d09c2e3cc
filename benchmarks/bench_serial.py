"""Serial throughput of trivial experiments, as ratios against references measured in the same run.

Usage: python benchmarks/bench_serial.py [N] [RECHECK_N] [SMALLAB_N]   (defaults 10000, 100000 and N)

Prints:
- experiments/s of a first run of N specifications, against the SQLite floor: plain ``sqlite3`` doing the same row
  work on the same schema (hash each specification, insert it pending, claim it, call ``main``, store its result,
  in transactions of 1,000 rows), each the best of three taking turns, in new files; and against smallab 2.3.1's
  ``MainRunner`` on SMALLAB_N specifications;
- the seconds to re-check RECHECK_N completed specifications: a second run of the same batch with the same list
  (the batch knows it holds that list), and a third with the list reversed (each specification hashed again);
- the peak memory of the process;
- the cost of keeping each run's output: N runs of an experiment printing one line (to a standard output sent to
  /dev/null) against N runs of the trivial one, each measured three times, best of three.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from smallab_db import ExperimentRunner

CHUNK = 1000
ATTEMPTS = 3  # the floor and smallab-db's first run are each the best of this many
TIMESTAMP = "2026-01-01 00:00:00.000000"


def trivial(specification: dict[str, Any]) -> dict[str, Any]:
    return {"x": specification["seed"]}


def printing(specification: dict[str, Any]) -> dict[str, Any]:
    print("seed", specification["seed"])
    return {"x": specification["seed"]}


def sqlite_floor(path: Path, n: int) -> float:
    """Experiments/s of plain sqlite3 doing smallab-db's row work on its own schema, in a new file, with none of its
    code."""
    runner = ExperimentRunner(path)  # the schema, made by the migrations
    runner.run("floor", [], trivial, show_progress=False)
    runner.close()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    start = time.perf_counter()
    rows = []
    for seed in range(n):
        text = encode({"seed": seed})
        rows.append((hashlib.sha256(text.encode()).hexdigest(), text))
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        "INSERT INTO runs (batch_id, spec_hash, specification, status, attempts, created_at) "
        f"VALUES (1, ?, ?, 'pending', 0, '{TIMESTAMP}')",
        rows,
    )
    connection.execute("COMMIT")
    while True:
        connection.execute("BEGIN IMMEDIATE")
        claimed = connection.execute(
            "UPDATE runs SET status = 'running', attempts = attempts + 1, claim_token = 'floor', "
            f"lease_expires_at = '{TIMESTAMP}', started_at = '{TIMESTAMP}' WHERE id IN "
            f"(SELECT id FROM runs WHERE batch_id = 1 AND status = 'pending' ORDER BY id LIMIT {CHUNK}) "
            "RETURNING id, specification"
        ).fetchall()
        connection.execute("COMMIT")
        if not claimed:
            break
        results = []
        for run_id, text in claimed:
            result = trivial(json.loads(text))
            results.append((pickle.dumps(result), json.dumps(result), TIMESTAMP, run_id))
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "UPDATE runs SET status = 'completed', result = ?, result_json = ?, finished_at = ?, "
            "lease_expires_at = NULL WHERE id = ? AND claim_token = 'floor' AND status = 'running'",
            results,
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - start
    connection.close()
    return n / elapsed


def first_run(path: Path, n: int) -> float:
    """Experiments/s of smallab-db running a new batch of ``n`` trivial specifications serially, in a new file."""
    with ExperimentRunner(path) as runner:
        specifications = [{"seed": seed} for seed in range(n)]
        start = time.perf_counter()
        summary = runner.run("first", specifications, trivial, show_progress=False)
        rate = n / (time.perf_counter() - start)
    assert len(summary.completed) == n
    return rate


def smallab_main_runner(folder: Path, n: int) -> float:
    """Experiments/s of smallab 2.3.1's ``MainRunner`` (serial, in the main process) on the same experiment."""
    from smallab.experiment_types.experiment import Experiment
    from smallab.runner.runner import ExperimentRunner as SmallabRunner
    from smallab.runner_implementations.main_process_runner import MainRunner

    class Trivial(Experiment):  # type: ignore[misc]
        def main(self, specification: dict[str, Any]) -> dict[str, Any]:
            return trivial(specification)

        def get_name(self, specification: dict[str, Any]) -> str:
            return str(specification["seed"])

    logging.disable(logging.CRITICAL)
    here = os.getcwd()
    os.chdir(folder)
    try:
        start = time.perf_counter()
        SmallabRunner().run(
            "smallab",
            [{"seed": seed} for seed in range(n)],
            Trivial(),
            specification_runner=MainRunner(False),
            use_dashboard=False,
        )
        return n / (time.perf_counter() - start)
    finally:
        os.chdir(here)
        logging.disable(logging.NOTSET)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    recheck_n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    smallab_n = int(sys.argv[3]) if len(sys.argv) > 3 else n  # the same batch size: its cost per run grows with it
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        floor, first = 0.0, 0.0
        for attempt in range(ATTEMPTS):  # taking turns, so that both see the same machine
            floor = max(floor, sqlite_floor(folder / f"floor-{attempt}.db", n))
            first = max(first, first_run(folder / f"first-{attempt}.db", n))
        runner = ExperimentRunner(folder / "bench.db")

        big = [{"seed": seed} for seed in range(recheck_n)]
        runner.run("recheck", big, trivial, show_progress=False)
        start = time.perf_counter()
        summary = runner.run("recheck", big, trivial, show_progress=False)
        recheck_seconds = time.perf_counter() - start
        assert summary.skipped == recheck_n
        big.reverse()  # another list with the same runs: each specification is hashed and looked up
        start = time.perf_counter()
        summary = runner.run("recheck", big, trivial, show_progress=False)
        rehash_seconds = time.perf_counter() - start
        assert summary.skipped == recheck_n
        quiet_rate, printing_rate = output_rates(runner, n)
        runner.close()
        smallab = smallab_main_runner(folder, smallab_n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"SQLite floor (plain sqlite3, same row work and schema): {floor:,.0f} experiments/s, N={n}, best of {ATTEMPTS}"
    )
    print(f"smallab 2.3.1 MainRunner: {smallab:,.0f} experiments/s, N={smallab_n}")
    print(
        f"first run: {first:,.0f} experiments/s serial, N={n}, best of {ATTEMPTS}; ratio to the floor "
        f"{first / floor:.2f}, to smallab 2.3.1 {first / smallab:.0f}x"
    )
    print(
        f"re-run: {recheck_n:,} completed specifications re-checked in {recheck_seconds:.3f} s (the same list), "
        f"{rehash_seconds:.3f} s (the list reversed: each specification hashed)"
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
