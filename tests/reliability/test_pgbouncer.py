"""Runners through PgBouncer in transaction mode, as docs/cluster.md advises beyond the server's max_connections:
each transaction may land on another server connection, so smallab-db must keep no session state (no server-side
prepared statements). PgBouncer runs as the user postgres in a folder of its own, in front of the test's database."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import processes
import pytest
from private_postgres import free_port
from runner_processes import completed_counts, race, statuses
from workloads import executions

SMALLAB_DB = str(Path(sys.executable).parent / "smallab-db")
SERVER_CONNECTIONS = 2  # fewer than the runners' own 2 each, so that they must share


@pytest.fixture
def pgbouncer_url(postgres_url: str) -> Iterator[str]:
    """The URL of the test's database through a PgBouncer of its own in transaction mode."""
    if shutil.which("pgbouncer") is None or os.getuid() != 0:
        if os.environ.get("CI"):
            raise RuntimeError("CI needs pgbouncer (.ci/run installs it) and root, to run it as the user postgres")
        pytest.skip("needs pgbouncer (apt-get install pgbouncer) and root, to run it as the user postgres")
    database = postgres_url.rsplit("/", 1)[1]
    folder = Path(tempfile.mkdtemp(prefix="smallab-pgbouncer-"))
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host=127.0.0.1 port=5432 dbname={database} user=postgres\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {folder}\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\npool_mode = transaction\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmax_client_conn = 100\nlogfile = {folder}/log\n"
    )
    shutil.chown(folder, "postgres")
    bouncer = processes.spawn(["runuser", "-u", "postgres", "--", "pgbouncer", str(folder / "pgbouncer.ini")])
    try:
        processes.run(["pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "30"], timeout=60, check=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        processes.kill_group(bouncer)
        bouncer.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_four_runners_through_pgbouncer_in_transaction_mode_complete_a_batch_once(
    postgres_url: str, pgbouncer_url: str, tmp_path: Path
) -> None:
    processes.run([SMALLAB_DB, "migrate", postgres_url], timeout=120, check=True)  # on the server, as the page says
    markers, count = tmp_path / "markers", 200
    outputs = race(pgbouncer_url, ["bounced"] * 4, count, markers)
    for _, err in outputs:
        assert err == "", err  # no outcome refused, no retry
    assert executions(markers) == {seed: 1 for seed in range(count)}
    stored = statuses(postgres_url)
    assert len(stored) == count and {(status, attempts) for status, attempts, _ in stored.values()} == {
        ("completed", 1)
    }
    assert sum(completed_counts(outputs)) == count
