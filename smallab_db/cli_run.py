"""``smallab-db run``: a batch started from the shell, as a cluster job script does, with the Python API's behaviour."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from smallab_db import cli_output, dask_dispatch, dispatch, specification
from smallab_db.batches import check_batch_name
from smallab_db.cli import PathParameter, batch_option, database_argument, database_url, main
from smallab_db.database import describe
from smallab_db.errors import ExperimentError, SpecError, UsageError
from smallab_db.experiment import ExperimentMain, Specification, experiment_main
from smallab_db.generators import SpecificationGenerator
from smallab_db.runner.runner import DEFAULT_LEASE_SECONDS, ExperimentRunner
from smallab_db.schema import RUNNING
from smallab_db.summary import RunSummary

MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_PARALLEL = 10_000
INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)


@main.command(name="run")
@database_argument
@batch_option
@click.option("--experiment", required=True, metavar="MODULE:NAME", help="A class, an instance or a function.")
@click.option("--specs", "specs_file", type=PathParameter(), help="A JSON file holding a list of specifications.")
@click.option("--grid", "grid_file", type=PathParameter(), help="A JSON file holding a generator dict (or a list).")
@click.option(
    "--parallel",
    type=click.IntRange(min=1, max=MAX_PARALLEL),
    help="Runs at a time [default: 1; with --scheduler, one per worker thread].",
)
@click.option("--backend", metavar="NAME", help="The joblib backend for --parallel (loky, threading, dask).")
@click.option("--scheduler", metavar="ADDRESS", help="Run on this Dask scheduler, such as tcp://10.0.0.5:8786.")
@click.option(
    "--lease",
    default=str(DEFAULT_LEASE_SECONDS),
    show_default=True,
    metavar="SECONDS",
    help="How long a dead machine's runs wait before other runners take them over.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
def run_command(
    url: str | None,
    batch: str,
    experiment: str,
    specs_file: Path | None,
    grid_file: Path | None,
    parallel: int | None,
    backend: str | None,
    scheduler: str | None,
    lease: str,
    progress: bool,
) -> None:
    """Run the specifications of a batch that are not completed yet, and store every run.

    The same command on many machines, pointed at one PostgreSQL database, shares the batch out: each run executes
    once, and a dead machine's runs are taken over once its lease expires. MODULE is imported from the current
    folder or PYTHONPATH; NAME is an Experiment class (made without arguments), an instance, or a function
    taking a specification dict. Exit status 1 when runs failed, saying how many; running the same command again
    runs them again. Ctrl-C stores what finished and exits with status 130.

    Example: smallab-db run results.db --batch doubling --experiment experiments:Doubling --grid grid.json
    """
    check_batch_name(batch)
    lease_seconds = _lease_seconds(lease)
    if scheduler is not None:
        backend = _dask_backend(backend)
    else:
        dispatch.check_backend(backend)
    specifications = _specifications(specs_file, grid_file)
    runs_one = load_experiment(experiment)
    num_parallel = parallel if parallel is not None else None if scheduler is not None else 1
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            stack.enter_context(dask_dispatch.connect(scheduler))
        resolved = database_url(url)
        runner = stack.enter_context(ExperimentRunner(resolved, lease_seconds=lease_seconds))
        try:
            summary = runner.run(
                batch,
                specifications,
                runs_one,
                num_parallel=num_parallel,
                show_progress=progress,
                backend=backend,
            )
        except KeyboardInterrupt:  # the runner said what was stored and that the same command resumes
            raise click.exceptions.Exit(INTERRUPTED_EXIT_STATUS) from None
        still_running = runner.store.count(runner.store.find_batch(batch) or 0, RUNNING)
    click.echo(_report(batch, summary, still_running))
    if summary.failed:
        raise click.ClickException(
            f"{len(summary.failed)} run(s) of batch {batch!r} failed (see above, or list them with `smallab-db runs "
            f"{describe(resolved)} --batch {batch} --status failed`); running the same command again runs them again"
        )


def load_experiment(reference: str) -> ExperimentMain:
    """Import ``module:Name`` from the current folder or ``PYTHONPATH`` and return what runs one specification: an
    instance of a class (made without arguments), an instance's ``main``, or a function.

    Raises:
        UsageError: the reference is not ``module:Name``, or names no module or attribute.
        ExperimentError: importing the module failed, or the class cannot be made without arguments.
    """
    module_name, _, name = reference.partition(":")
    if not all(part.isidentifier() for part in [*module_name.split("."), name]):
        raise UsageError(
            f"--experiment takes MODULE:NAME, a Python module and a name in it, such as experiments:Doubling, but "
            f"got {cli_output.printable(reference)!r:.120}"
        )
    if os.getcwd() not in sys.path:  # as `python -m` does: the experiment's module lies beside the job script
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_name.startswith(error.name):
            raise ExperimentError(f"importing {module_name!r} failed: {error}") from error
        raise UsageError(
            f"no module {module_name!r} in the current folder ({os.getcwd()}) or on PYTHONPATH: run the command "
            "from the folder that holds it, or add that folder to PYTHONPATH"
        ) from error
    except Exception as error:
        raise ExperimentError(f"importing {module_name!r} raised {type(error).__name__}: {error}") from error
    try:
        found = getattr(module, name)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no {name!r}: check --experiment {reference}") from None
    if isinstance(found, type):
        try:
            found = found()
        except TypeError as error:
            raise ExperimentError(
                f"{reference} cannot be made without arguments ({error}): give defaults to its __init__, or name a "
                "module-level instance or function instead"
            ) from error
    return experiment_main(found)


def _specifications(specs_file: Path | None, grid_file: Path | None) -> list[Specification]:
    """Read the specifications from ``--specs`` (a list) or expand the generator of ``--grid``, and validate them
    before anything is opened or written.

    Raises:
        UsageError: neither or both were given.
        SpecError: the file is not JSON, or not what its option takes, naming the file.
    """
    if (specs_file is None) == (grid_file is None):
        raise UsageError("give the specifications with exactly one of --specs FILE.json and --grid FILE.json")
    if grid_file is not None:
        source, loaded = grid_file, SpecificationGenerator().from_json_file(grid_file)
    else:
        assert specs_file is not None
        source, loaded = specs_file, _json_list(specs_file)
    try:
        return specification.validate_all(loaded)
    except SpecError as error:
        raise SpecError(f"in {str(source)!r}: {error}") from error


def _json_list(path: Path) -> list[Any]:
    """Read the JSON list of specifications of ``--specs``.

    Raises:
        SpecError: the file is not JSON, or holds something else than a list.
    """
    with path.open(encoding="utf-8") as file:
        try:
            loaded = json.load(file)
        except ValueError as error:
            raise SpecError(f"{str(path)!r} is not JSON: {error}") from error
    if not isinstance(loaded, list):
        raise SpecError(
            f"--specs takes a JSON list of specifications, but {str(path)!r} holds a {type(loaded).__name__}: "
            "write [{...}, {...}], or give a generator dict with --grid"
        )
    return loaded


def _lease_seconds(text: str) -> float:
    """Parse ``--lease``: a positive, finite number of seconds, at most a week."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_LEASE_SECONDS:
        raise UsageError(
            f"--lease takes a number of seconds above 0 and at most {MAX_LEASE_SECONDS} (a week), but got {text!r}"
        )
    return seconds


def _dask_backend(backend: str | None) -> str:
    """The backend for ``--scheduler``: Dask.

    Raises:
        UsageError: another backend was named too.
    """
    if backend not in (None, "dask"):
        raise UsageError(f"--scheduler runs on Dask, but --backend {backend!r} was given too: leave one out")
    return "dask"


def _report(batch: str, summary: RunSummary, still_running: int) -> str:
    """The closing lines: what this command did, and what it left running elsewhere."""
    lines = [
        f"batch {batch!r}: {len(summary.completed)} completed, {len(summary.failed)} failed, "
        f"{summary.skipped} already completed"
    ]
    if summary.not_stored:
        lines.append(
            f"{len(summary.not_stored)} run(s) finished here after another runner had taken them over (this runner "
            "stalled past its lease): the other runner's outcome counts"
        )
    if still_running:
        lines.append(
            f"{still_running} run(s) of the batch are running elsewhere: another runner's, or a dead machine's, which "
            "the next runner looking for work takes over once their lease expires"
        )
    return "\n".join(lines)
