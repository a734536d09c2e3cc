"""Every command of the installed ``smallab-db`` script without a URL: it uses ``$SMALLAB_DB``, else ``./smallab.db``,
as the docs say, and a single positional argument is never taken for the URL.

The commands are discovered from the click group, so a new command fails :func:`test_every_command_has_a_case`
until it gets one in ``CASES``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import processes
import pytest
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main
from smallab_db.migration import HEAD_REVISION

SCRIPT = Path(sys.executable).parent / "smallab-db"
HASH = specification_hash({"seed": 2})
ONLY_BROKEN = specification_hash({"seed": 3})  # the one run of batch broken that batch done has not


class SayingFailOnOdd(FailOnOdd):
    """Says so before raising for an odd seed: that is the run's output, for `logs`."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        if specification["seed"] % 2:
            print(f"seed {specification['seed']} is odd")
        return super().main(specification)


@dataclass(frozen=True)
class Place:
    """Where a case runs: the database the command must use, a tree exported from it, and the working directory."""

    database: Path
    tree: Path
    cwd: Path


def rows(database: Path, sql: str) -> list[tuple[object, ...]]:
    """The rows of ``sql`` on the SQLite file ``database``."""
    connection = sqlite3.connect(database)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def statuses(database: Path, batch: str) -> list[str]:
    """The statuses of batch ``batch``'s runs, in run order."""
    query = f"SELECT status FROM runs JOIN batches ON batches.id = batch_id WHERE name = '{batch}' ORDER BY runs.id"
    return [status for (status,) in rows(database, query)]


def check_migrate(place: Place, stdout: str) -> None:
    assert stdout == f"{place.database}: schema at revision {HEAD_REVISION} (up to date)\n"


def check_status(place: Place, stdout: str) -> None:
    counts = [line.split() for line in stdout.splitlines()[2:]]
    assert counts == [["done", "0", "0", "3", "0"], ["broken", "0", "0", "2", "2"]]


def check_query(place: Place, stdout: str) -> None:
    assert stdout.split()[-1] == "7"


def check_runs(place: Place, stdout: str) -> None:
    assert len(stdout.splitlines()) == 2 + 3 and HASH[:12] in stdout


def check_show(place: Place, stdout: str) -> None:
    assert f"hash:          {ONLY_BROKEN}\n" in stdout and "of batch 'broken'" in stdout


def check_logs(place: Place, stdout: str) -> None:
    assert stdout == "seed 3 is odd\n"


def check_export(place: Place, stdout: str) -> None:
    assert (place.cwd / "out" / "done" / HASH / "specification.json").is_file()


def check_import(place: Place, stdout: str) -> None:
    assert statuses(place.database, "fresh") == ["completed"] * 3


def check_retry(place: Place, stdout: str) -> None:
    assert statuses(place.database, "broken") == ["completed", "pending", "completed", "pending"]


def check_run(place: Place, stdout: str) -> None:
    assert statuses(place.database, "fresh") == ["completed"] * 2


def check_rm(place: Place, stdout: str) -> None:
    assert rows(place.database, "SELECT name FROM batches") == [("broken",)]


def check_watch(place: Place, stdout: str) -> None:
    counts = [line.split()[:4] for line in stdout.splitlines() if line.split()[1:2] in (["3/3"], ["2/4"])]
    assert counts == [["done", "3/3", "0", "0"], ["broken", "2/4", "2", "0"]]


def check_report(place: Place, stdout: str) -> None:
    assert "<h3>ValueError: 2 run(s)</h3>" in (place.cwd / "report.html").read_text(encoding="utf-8")


# Per command: its arguments without a URL, and what must have happened to the database it should have used.
CASES: dict[str, tuple[list[str], Callable[[Place, str], None]]] = {
    "migrate": (["migrate"], check_migrate),
    "status": (["status"], check_status),
    "query": (["query", "SELECT count(*) AS n FROM runs"], check_query),
    "runs": (["runs", "--batch", "done"], check_runs),
    "show": (["show", ONLY_BROKEN[:8]], check_show),
    "logs": (["logs", ONLY_BROKEN[:8]], check_logs),
    "export": (["export", "--batch", "done", "--to", "out"], check_export),
    "import": (["import", "{tree}", "--batch", "fresh"], check_import),
    "retry": (["retry", "--batch", "broken"], check_retry),
    "rm": (["rm", "--batch", "done", "--yes"], check_rm),
    "run": (["run", "--batch", "fresh", "--experiment", "doubling:double", "--specs", "specs.json"], check_run),
    "watch": (["watch", "--once"], check_watch),
    "report": (["report", "--batch", "broken", "-o", "report.html"], check_report),
}


def test_every_command_has_a_case() -> None:
    """Each command of the group is run without a URL below, and no case names a command that does not exist."""
    assert set(CASES) == set(main.commands)


def build(database: Path, folder: Path) -> Path:
    """Batch ``done`` (3 completed runs) and ``broken`` (2 of 4 failed) in ``database``; return a tree of ``done``
    exported below ``folder``."""
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run("done", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
        runner.run("broken", [{"seed": seed} for seed in range(4)], SayingFailOnOdd(), show_progress=False)
        return runner.export("done", folder / "tree")


@pytest.mark.parametrize("where", ["environment", "default"])
@pytest.mark.parametrize("command", sorted(CASES))
def test_every_command_without_a_url_uses_the_documented_database(tmp_path: Path, command: str, where: str) -> None:
    """Without a URL, the command works on ``$SMALLAB_DB`` when it is set (here a database outside the working
    directory, which holds a decoy ``smallab.db`` that must stay unchanged), else on ``./smallab.db``."""
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    decoy = cwd / "smallab.db"
    if where == "environment":
        database = tmp_path / "elsewhere.db"
        environment["SMALLAB_DB"] = str(database)
        build(decoy, tmp_path / "decoy")
    else:
        database = decoy
    tree = tmp_path if command == "migrate" else build(database, tmp_path)
    (cwd / "doubling.py").write_text("def double(specification):\n    return {'x': 2 * specification['seed']}\n")
    (cwd / "specs.json").write_text('[{"seed": 1}, {"seed": 2}]')  # what `run` is given
    before = decoy.read_bytes() if where == "environment" else None
    arguments, check = CASES[command]
    line = [argument.replace("{tree}", str(tree)) for argument in arguments]

    process = processes.run([str(SCRIPT), *line], cwd=cwd, env=environment, text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    check(Place(database, tree, cwd), process.stdout)
    if before is not None:
        assert decoy.read_bytes() == before, "the decoy ./smallab.db was used"
