"""A runner keeps its SQLite file's write-ahead log small by checkpointing between its write turns, since SQLite's own
checkpoints, made inside a commit and so inside the writer's turn, are off on its connections."""

from __future__ import annotations

from pathlib import Path

from smallab_db import ExperimentRunner


def trivial(specification: dict[str, int]) -> dict[str, int]:
    return {"x": specification["seed"]}


def test_the_log_stays_small_while_a_runner_stores_a_big_batch(tmp_path: Path) -> None:
    database = tmp_path / "log.db"
    runner = ExperimentRunner(database)
    runner.run("log", [{"seed": seed} for seed in range(20_000)], trivial, show_progress=False)
    with runner.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
    log_bytes = Path(f"{database}-wal").stat().st_size  # the connections are open: the log is still there
    assert 0 < log_bytes < 8 * 2**20  # never checkpointed, these runs leave about 22 MB of log
    runner.close()
