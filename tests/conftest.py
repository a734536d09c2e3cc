"""Fixtures: a fresh SQLite file per test, and a fresh PostgreSQL database per test where the server runs; the ids of
the runs that workers hand back by id."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import private_postgres
import pytest
from processes import kill_all

from smallab_db.experiment import Specification
from smallab_db.reporting import Reporter

TESTS = Path(__file__).resolve().parent
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

if str(TESTS) not in sys.path:  # workers and subprocesses import tests/workloads.py
    sys.path.insert(0, str(TESTS))

# The tests of Ctrl-C send SIGINT, to this process and to the ones it starts. A shell that starts the suite in the
# background without job control ignores SIGINT, and processes inherit that: Python then leaves it ignored. Handled
# here, it is the default again in every process started (exec resets handlers, not what is ignored).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _kill_child_processes() -> Iterator[None]:
    """Every process a test started through ``processes.spawn`` dies with the test, children included."""
    yield
    kill_all()


@pytest.fixture(autouse=True)
def _cli_bugs_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception in a CLI command propagates with its traceback, in-process and in the subprocesses
    that inherit the environment, instead of becoming the one ``Error: internal error`` line users see."""
    monkeypatch.setenv("SMALLAB_DB_DEBUG", "1")


@pytest.fixture
def handed_back_by_id(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the runs that workers completed, stored and handed back by id alone in this test, as the runner
    reports them (see ``smallab_db.records.StoredRuns``)."""
    handed_back: list[int] = []
    deliver_completed = Reporter.deliver_completed

    def recording(reporter: Reporter, runs: list[tuple[int, Specification]]) -> None:
        handed_back.extend(run_id for run_id, _ in runs)
        deliver_completed(reporter, runs)

    monkeypatch.setattr(Reporter, "deliver_completed", recording)
    return handed_back


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    """A path for a new SQLite database file."""
    return str(tmp_path / "runs.db")


def _postgres_or_skip() -> object:
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs the local PostgreSQL server; .ci/run starts it") from error
        pytest.skip(f"PostgreSQL is not running on 127.0.0.1:5432: {error}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, uniquely named PostgreSQL database, dropped after the test."""
    admin = _postgres_or_skip()
    name = f"smallab_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each behaviour test that takes this runs once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def own_postgres_server() -> Iterator[private_postgres.PrivateServer]:
    """A PostgreSQL server of the test's own, which it may restart or load (``tests/private_postgres.py``); stopped
    and removed after the test. Skipped where it cannot run (not root, no server binaries), except under ``CI=true``,
    where that fails."""
    reason = private_postgres.unavailable_because()
    if reason is not None:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs a private PostgreSQL server: {reason}")
        pytest.skip(f"cannot start a private PostgreSQL server: {reason}")
    server = private_postgres.create()
    try:
        yield server
    finally:
        private_postgres.destroy(server)
