"""A PostgreSQL server of a test's own, on a free loopback port, which the test may restart or load as it likes
without disturbing the shared server on 127.0.0.1:5432 that other tests use.

PostgreSQL refuses to run as root, so the cluster belongs to the OS user ``postgres``; it lives in a folder outside
pytest's private tmp tree (which ``postgres`` cannot enter), stopped and removed when the test ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import processes

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
OWNER = "postgres"


def unavailable_because() -> str | None:
    """Why a private server cannot be started here, or None when it can."""
    if os.getuid() != 0 or shutil.which("runuser") is None:
        return "needs root and runuser, to run PostgreSQL as the user postgres"
    if not BINARIES:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        return f"no OS user {OWNER!r} to run PostgreSQL as"
    return None


@dataclass
class PrivateServer:
    """A PostgreSQL cluster in ``folder`` listening on ``127.0.0.1:port``, with trust authentication."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server, as its superuser."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *arguments: str) -> None:
        """Run ``pg_ctl`` on this cluster as its owner, waiting for it to finish."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._as_owner("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", *arguments)

    def start(self) -> None:
        self.pg_ctl("start")

    def restart(self, down_seconds: float) -> None:
        """Stop the server, dropping every connection (``-m fast``: their transactions roll back), leave it down for
        ``down_seconds``, and start it."""
        self.pg_ctl("stop", "-m", "fast")
        time.sleep(down_seconds)
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "immediate")

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        self._as_owner("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _as_owner(self, program: str, *arguments: str) -> None:
        command = ["runuser", "-u", OWNER, "--", str(BINARIES[-1] / program), *arguments]
        processes.run(command, timeout=120, check=True, cwd=self.folder)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def create(settings: Sequence[str] = ()) -> PrivateServer:
    """Initialise and start a new cluster; ``settings`` are extra ``postgresql.conf`` lines."""
    folder = Path(tempfile.mkdtemp(prefix="smallab-private-postgres-"))
    shutil.chown(folder, OWNER, OWNER)
    server = PrivateServer(folder, free_port())
    try:
        server._as_owner("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (server.data / "postgresql.conf").open("a") as configuration:
            configuration.write("".join(f"{line}\n" for line in ["fsync = off", *settings]))
        server.start()
    except BaseException:
        destroy(server)
        raise
    return server


def destroy(server: PrivateServer) -> None:
    """Stop the server if it runs, and remove its folder."""
    try:
        if (server.data / "postmaster.pid").exists():
            server.stop()
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)
