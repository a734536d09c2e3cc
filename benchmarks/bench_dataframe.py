"""Loading runs into a pandas DataFrame, as a ratio against raw SQLite measured in the same run.

Usage: python benchmarks/bench_dataframe.py [N]   (default 100000)

Fills a batch with N completed runs, then times runner.dataframe() against the least any loader has to do:
a raw sqlite3 fetch of the same rows with json.loads of specification and result, into pandas.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pandas

from smallab_db import ExperimentRunner


def experiment(specification: dict) -> dict:
    return {"loss": specification["seed"] / 7, "metrics": {"accuracy": 0.5, "epochs": specification["size"]}}


def raw_load(path: Path) -> pandas.DataFrame:
    connection = sqlite3.connect(path)
    rows = connection.execute("SELECT id, specification, result_json, status FROM runs ORDER BY id").fetchall()
    connection.close()
    records = [{**json.loads(spec), **json.loads(result), "status": status} for _, spec, result, status in rows]
    return pandas.DataFrame.from_records(records, index=[row[0] for row in rows])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frame.db"
        runner = ExperimentRunner(path)
        specifications = [{"seed": seed, "size": seed % 10} for seed in range(n)]
        runner.run("frame", specifications, experiment, show_progress=False)

        start = time.perf_counter()
        baseline = raw_load(path)
        baseline_seconds = time.perf_counter() - start

        start = time.perf_counter()
        frame = runner.dataframe("frame")
        seconds = time.perf_counter() - start
        assert len(frame) == len(baseline) == n
        runner.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"raw sqlite3 + json + pandas baseline: {n:,} runs in {baseline_seconds:.2f} s")
    print(
        f"runner.dataframe: {n:,} runs in {seconds:.2f} s ({n / seconds:,.0f} runs/s); ratio to baseline "
        f"{seconds / baseline_seconds:.2f}x the time"
    )
    print(f"peak memory: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
