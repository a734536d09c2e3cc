"""Experiments that write to standard output and error and log, importable by worker processes, and what their runs
keep."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.database import create_engine, resolve_url
from smallab_db.schema import runs

LINES = 5  # lines each stream gets from :func:`talk`
LOGGED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - talk - WARNING - (.*)$", re.MULTILINE)


def talk(specification: dict[str, Any]) -> dict[str, Any]:
    """Write ``LINES`` numbered lines to standard output, standard error and a logger, in turn, pausing
    ``specification["pause"]`` seconds (default 0) between them; fail when ``specification["fail"]`` is set."""
    seed = specification["seed"]
    for line in range(LINES):
        print(f"out {seed}.{line}")
        print(f"err {seed}.{line}", file=sys.stderr)
        logging.getLogger("talk").warning("log %s.%s", seed, line)
        time.sleep(specification.get("pause", 0))
    if specification.get("fail"):
        raise ValueError(f"failed after talking: {seed}")
    return {"seed": seed}


def expected_talk(seed: int) -> str:
    """What :func:`talk` writes for ``seed``, as its run keeps it (a warning reaches standard error by itself)."""
    return "".join(f"out {seed}.{line}\nerr {seed}.{line}\nlog {seed}.{line}\n" for line in range(LINES))


def shout(specification: dict[str, Any]) -> dict[str, Any]:
    """Print ``specification["characters"]`` characters, in lines of 100 (99 digits of the line's number, then a
    newline)."""
    for line in range(specification["characters"] // 100):
        print(f"{line:099d}")
    return {}


def print_wait_print(specification: dict[str, Any]) -> dict[str, Any]:
    """Print ``first``, wait (at most 120 s) until the file ``specification["go"]`` exists, print ``second``."""
    print("first", flush=True)
    deadline = time.monotonic() + 120
    while not Path(specification["go"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("second", flush=True)
    return {}


def print_then_die(specification: dict[str, Any]) -> dict[str, Any]:
    """Print a line, wait (at most 120 s) until some run's output is in the database ``specification["database"]``,
    then die by SIGKILL, as the out-of-memory killer kills."""
    print("about to die", flush=True)
    engine = create_engine(resolve_url(specification["database"]))
    query = sa.select(runs.c.id).where(runs.c.output.is_not(None))
    deadline = time.monotonic() + 120
    with engine.connect() as connection:
        while connection.execute(query).first() is None and time.monotonic() < deadline:
            connection.rollback()
            time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def outputs(runner: ExperimentRunner, batch: str) -> dict[str, tuple[str, str | None]]:
    """Map each run's hash to its status and output, read from the view ``run_details``."""
    query = sa.text("SELECT spec_hash, status, output FROM run_details WHERE batch = :batch")
    with runner.engine.connect() as connection:
        return {
            spec_hash: (status, output) for spec_hash, status, output in connection.execute(query, {"batch": batch})
        }


def without_log_format(output: str | None) -> str:
    """``output`` with the records of logger ``talk`` as a process without logging handlers prints them (the message
    alone): with handlers (as under pytest), records no handler prints on standard error are kept in ``LOG_FORMAT``."""
    return LOGGED.sub(r"\1", output or "")


def talked(runner: ExperimentRunner, batch: str, specifications: list[dict[str, Any]]) -> None:
    """Each run of ``specifications`` kept exactly what :func:`talk` wrote for it, and no other run's lines."""
    stored = outputs(runner, batch)
    for specification in specifications:
        status, output = stored[specification_hash(specification)]
        assert without_log_format(output) == expected_talk(specification["seed"]), (specification, output)
        assert status == ("failed" if specification.get("fail") else "completed")
