"""Claim-and-record throughput on PostgreSQL with 1, 2, 4 and 8 runner processes sharing one batch of trivial
experiments, as ratios against raw psycopg measured in the same run.

Usage: python benchmarks/bench_postgresql.py [N] [ADMIN_URL]
    (defaults 40000 and postgresql://postgres@127.0.0.1:5432/postgres)

For each number of processes, N specifications are registered as pending, then that many runner processes (each
``num_parallel=1``) start at one moment and claim, run and store them all. Prints the aggregate experiments/s, the
raw psycopg baseline (a batched insert of the same N rows, then a batched update of each with its result, one
transaction each) and the peak memory of one runner process. Each run uses a database of its own, dropped at the end.
"""

from __future__ import annotations

import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from smallab_db import ExperimentRunner
from smallab_db.specification import hashed

PROCESSES = (1, 2, 4, 8)


def trivial(specification: dict) -> dict:
    return {"x": specification["seed"]}


def raw_psycopg_rows_per_second(url: str, n: int) -> float:
    """Insert n runs, then update each with its result, in batches (psycopg's pipelined executemany): the least any
    store has to do over the same connection, without a framework."""
    with psycopg.connect(url) as connection:
        connection.execute(
            "CREATE TABLE raw_runs (id serial PRIMARY KEY, spec_hash text UNIQUE, specification json, status text, "
            "result bytea, result_json json)"
        )
        connection.commit()
        start = time.perf_counter()
        rows = list(hashed([{"seed": seed} for seed in range(n)]))
        insert = "INSERT INTO raw_runs (spec_hash, specification, status) VALUES (%s, %s, 'pending')"
        with connection.cursor() as cursor:
            cursor.executemany(insert, rows)
        connection.commit()
        results = [(pickle.dumps({"x": seed}), json.dumps({"x": seed}), seed + 1) for seed in range(n)]
        with connection.cursor() as cursor:
            cursor.executemany("UPDATE raw_runs SET status='completed', result=%s, result_json=%s WHERE id=%s", results)
        connection.commit()
        return n / (time.perf_counter() - start)


def run_one_runner(url: str, batch: str, go: str) -> None:
    """A runner process: open the database, wait for the start line, run the batch's pending runs; print the start
    and end times and the peak memory."""
    runner = ExperimentRunner(url)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.001)
    start = time.time()
    summary = runner.run(batch, [], trivial, show_progress=False)
    end = time.time()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"start": start, "end": end, "completed": len(summary.completed), "peak_mb": peak_mb}))


def measure(url: str, n: int, processes: int) -> tuple[float, list[int], float]:
    """Run a batch of n trivial experiments with ``processes`` runner processes.

    Returns:
        Aggregate experiments/s, the runs each process completed, the largest peak memory of one process (MB).
    """
    batch = f"bench-{processes}"
    with ExperimentRunner(url) as registrar:
        batch_id = registrar.store.ensure_batch(batch)
        registrar.store.register(batch_id, list(hashed([{"seed": seed} for seed in range(n)])), rerun_all=False)
    with tempfile.TemporaryDirectory() as folder:
        go = str(Path(folder) / "go")
        command = [sys.executable, __file__, "--runner", url, batch, go]
        runners = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        for runner in runners:
            assert runner.stdout is not None and runner.stdout.readline().strip() == "ready"
        Path(go).touch()
        reports = []
        for runner in runners:
            out, _ = runner.communicate(timeout=600)
            assert runner.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = max(report["end"] for report in reports) - min(report["start"] for report in reports)
    done = [report["completed"] for report in reports]
    assert sum(done) == n, done
    return n / elapsed, done, max(report["peak_mb"] for report in reports)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    admin_url = sys.argv[2] if len(sys.argv) > 2 else "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"smallab_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_url.rsplit("/", 1)[0] + f"/{name}"
            baseline = raw_psycopg_rows_per_second(url, n)
            print(f"raw psycopg baseline: {baseline:,.0f} rows/s (batched insert + result update, N={n:,})")
            for processes in PROCESSES:
                rate, done, peak_mb = measure(url, n, processes)
                print(
                    f"{processes} runner process(es): {rate:,.0f} experiments/s in all; ratio to baseline "
                    f"{rate / baseline:.3f}; runs per process {done}; peak memory per process {peak_mb:,.0f} MB"
                )
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    if sys.argv[1:2] == ["--runner"]:
        run_one_runner(*sys.argv[2:5])
    else:
        main()
