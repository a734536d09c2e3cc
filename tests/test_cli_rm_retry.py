"""``smallab-db retry`` and ``rm`` on single runs (``--run PREFIX``) and on runs of one status (``--status``), on both
databases: exactly the chosen runs change, and the next run of the batch executes exactly the requeued ones."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy
from cli_checks import assert_clean_error
from click.testing import CliRunner, Result

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main
from smallab_db.database import resolve_url

SEEDS = [{"seed": seed} for seed in range(6)]  # seeds 1, 3 and 5 fail


def odd_fails(specification: dict[str, Any]) -> dict[str, Any]:
    """Fails for odd seeds."""
    if specification["seed"] % 2:
        raise ValueError(f"odd seed {specification['seed']}")
    return {"seed": specification["seed"]}


def build(database: str) -> None:
    """Batch ``odd`` (seeds 0-5; odd ones failed) and batch ``other`` with the same specifications."""
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run("odd", SEEDS, odd_fails, show_progress=False)
        runner.run("other", SEEDS, odd_fails, show_progress=False)


def invoke(*arguments: str, input: str | None = None) -> Result:
    """Run the click group in-process, without ``$SMALLAB_DB``."""
    return CliRunner().invoke(main, list(arguments), env={"SMALLAB_DB": None}, input=input)


def succeeded(result: Result) -> str:
    """The output of a command that must have succeeded."""
    assert result.exception is None and result.exit_code == 0, result.output
    return result.stdout


def statuses(database: str) -> dict[tuple[str, int], str]:
    """``{(batch, seed): status}`` of every stored run."""
    engine = sqlalchemy.create_engine(resolve_url(database))
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT batch, specification, status FROM run_details ORDER BY run_id"
            ).all()
    finally:
        engine.dispose()
    return {(batch, _seed(specification)): status for batch, specification, status in rows}


def _seed(specification: Any) -> int:
    return (json.loads(specification) if isinstance(specification, str) else specification)["seed"]


def expected(changes: dict[tuple[str, int], str | None]) -> dict[tuple[str, int], str]:
    """What :func:`build` stored, with ``changes`` (None: the run is gone)."""
    state = {(batch, seed): "failed" if seed % 2 else "completed" for batch in ("odd", "other") for seed in range(6)}
    for key, status in changes.items():
        if status is None:
            del state[key]
        else:
            state[key] = status
    return state


def executed_by_the_next_run(database: str) -> list[int]:
    """Run batch ``odd`` again, giving no specification (so that only its pending runs run, not its failed ones,
    which ``run`` retries by itself); return the seeds that were executed."""
    executed: list[int] = []

    def recording(specification: dict[str, Any]) -> dict[str, Any]:
        executed.append(specification["seed"])
        return {}

    with ExperimentRunner(database) as runner:
        runner.run("odd", [], recording, show_progress=False)
    return executed


def prefix(seed: int) -> str:
    """The 8-character hash prefix of seed ``seed``'s run, as a user copies it from ``runs``."""
    return specification_hash({"seed": seed})[:8]


# -- retry -------------------------------------------------------------------------------------------------------


def test_retry_run_puts_back_that_failed_run_only(database_url: str) -> None:
    """``retry --run PREFIX``: only that run of that batch is pending again, and only it runs next."""
    build(database_url)
    output = succeeded(invoke("retry", database_url, "--batch", "odd", "--run", prefix(3)))
    assert output == "1 failed run(s) of batch 'odd' are pending again\n"
    assert statuses(database_url) == expected({("odd", 3): "pending"})
    assert executed_by_the_next_run(database_url) == [3]


def test_retry_status_completed_puts_back_the_completed_runs(database_url: str) -> None:
    """``retry --status completed`` runs the completed runs again, not the failed ones."""
    build(database_url)
    output = succeeded(invoke("retry", database_url, "--batch", "odd", "--status", "completed"))
    assert output == "3 completed run(s) of batch 'odd' are pending again\n"
    assert statuses(database_url) == expected({("odd", seed): "pending" for seed in (0, 2, 4)})
    assert executed_by_the_next_run(database_url) == [0, 2, 4]


def test_retry_status_failed_is_the_default(database_url: str) -> None:
    """``--status failed`` does what ``retry`` without it does."""
    build(database_url)
    output = succeeded(invoke("retry", database_url, "--batch", "odd", "--status", "failed"))
    assert output == "3 failed run(s) of batch 'odd' are pending again\n"
    assert statuses(database_url) == expected({("odd", seed): "pending" for seed in (1, 3, 5)})


def test_retry_run_of_a_completed_run_names_the_status_to_give(sqlite_path: str) -> None:
    """A completed run is not put back by default: the error names ``--status completed``; with it, it is."""
    build(sqlite_path)
    line = assert_clean_error(invoke("retry", sqlite_path, "--batch", "odd", "--run", prefix(2)))
    assert "is completed, not failed: add --status completed to run it again" in line
    assert statuses(sqlite_path) == expected({})
    succeeded(invoke("retry", sqlite_path, "--batch", "odd", "--run", prefix(2), "--status", "completed"))
    assert statuses(sqlite_path) == expected({("odd", 2): "pending"})


# -- rm ----------------------------------------------------------------------------------------------------------


def test_rm_status_failed_deletes_only_the_failed_runs(database_url: str) -> None:
    """``rm --status failed``: the batch's failed runs are gone, its completed runs and the other batch stay."""
    build(database_url)
    output = succeeded(invoke("rm", database_url, "--batch", "odd", "--status", "failed", "--yes"))
    assert output == "deleted 3 run(s) of batch 'odd'\n"
    assert statuses(database_url) == expected({("odd", seed): None for seed in (1, 3, 5)})
    assert executed_by_the_next_run(database_url) == []


def test_rm_run_deletes_that_run_only(database_url: str) -> None:
    """``rm --run PREFIX``: that run of that batch is gone, nothing else."""
    build(database_url)
    output = succeeded(invoke("rm", database_url, "--batch", "odd", "--run", prefix(4), "--yes"))
    assert output == "deleted 1 run(s) of batch 'odd'\n"
    assert statuses(database_url) == expected({("odd", 4): None})


def test_rm_asks_naming_what_it_deletes_and_no_keeps_everything(sqlite_path: str) -> None:
    """Without ``--yes``, the question names the runs; answering no deletes nothing."""
    build(sqlite_path)
    answered_no = invoke("rm", sqlite_path, "--batch", "odd", "--status", "failed", input="n\n")
    assert "Delete the 3 failed run(s) of batch 'odd'?" in answered_no.output and answered_no.exit_code == 1
    answered_no = invoke("rm", sqlite_path, "--batch", "odd", "--run", prefix(1), input="n\n")
    assert f"Delete run {specification_hash({'seed': 1})[:12]} of batch 'odd'?" in answered_no.output
    assert statuses(sqlite_path) == expected({})


def test_rm_run_with_another_status_deletes_nothing(sqlite_path: str) -> None:
    """``--run`` and ``--status`` together must agree: a completed run is not deleted by ``--status failed``."""
    build(sqlite_path)
    line = assert_clean_error(invoke("rm", sqlite_path, "--batch", "odd", "--run", prefix(2), "--status", "failed"))
    assert "is completed, not failed: nothing deleted" in line
    assert statuses(sqlite_path) == expected({})


@pytest.mark.parametrize("command", ["rm", "retry"])
@pytest.mark.parametrize(
    "run, message",
    [
        ("0000000000", "no run in batch 'odd' has a hash starting with '0000000000'"),
        ("xyz", "is not the start of a hash"),
        ("", "is not the start of a hash"),
    ],
    ids=["unknown", "not-hexadecimal", "empty"],
)
def test_a_bad_run_prefix_changes_nothing(sqlite_path: str, command: str, run: str, message: str) -> None:
    """A prefix that matches no run of the batch, or is not one, is a clean error and changes nothing."""
    build(sqlite_path)
    arguments = [command, sqlite_path, "--batch", "odd", "--run", run] + (["--yes"] if command == "rm" else [])
    assert message in assert_clean_error(invoke(*arguments))
    assert statuses(sqlite_path) == expected({})


@pytest.mark.parametrize("command", ["rm", "retry"])
def test_a_prefix_of_several_runs_is_ambiguous(sqlite_path: str, command: str) -> None:
    """A prefix shared by several runs of the batch names them and changes nothing (among 17 runs, two hashes
    surely start with the same of the 16 hexadecimal digits)."""
    many = [{"seed": seed} for seed in range(17)]
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("odd", many, odd_fails, show_progress=False)
    digits = [specification_hash(spec)[0] for spec in many]
    shared = next(digit for digit in digits if digits.count(digit) > 1)
    before = statuses(sqlite_path)
    arguments = [command, sqlite_path, "--batch", "odd", "--run", shared] + (["--yes"] if command == "rm" else [])
    assert "matches several runs" in assert_clean_error(invoke(*arguments))
    assert statuses(sqlite_path) == before
