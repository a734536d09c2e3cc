"""A real terminal for tests: tmux runs a command in a pane, and its screen is read back as the user would see it
(cursor moves and line clearing applied, wrapped lines joined).

Each terminal has a tmux server of its own, on a socket of its own, killed when the test ends. Without
tmux, a test skips with the reason, except under ``CI=true``, where it fails (``.ci/run`` installs tmux).
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import processes
import pytest

WIDTH, HEIGHT = 160, 60


class Terminal:
    """A tmux server on the socket ``socket``; each command runs in a session of its own."""

    def __init__(self, socket: Path, environment: dict[str, str]) -> None:
        self.socket = socket
        self.environment = environment
        self.sessions = 0

    def tmux(self, *arguments: str, timeout: float = 30) -> str:
        """Run one tmux command on this terminal's server; return its output."""
        done = processes.run(
            ["tmux", "-S", str(self.socket), *arguments], env=self.environment, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"tmux {arguments}: {done.stderr}"
        return str(done.stdout)

    def run(self, command: str, cwd: Path, timeout: float = 120) -> list[str]:
        """Run the shell command ``command`` in a new session and return the lines of its screen (its history
        included) once it has ended."""
        self.sessions += 1
        session, ended = f"run{self.sessions}", f"ended{self.sessions}"
        tmux = f"tmux -S {shlex.quote(str(self.socket))}"
        script = f"cd {shlex.quote(str(cwd))} && {command}; {tmux} wait-for -S {ended}; sleep 600"
        self.tmux("new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT), script)
        self.tmux("wait-for", ended, timeout=timeout)
        screen = self.tmux("capture-pane", "-p", "-J", "-t", session, "-S", "-", "-E", "-")
        return [line.rstrip() for line in screen.rstrip("\n").splitlines() if line.strip()]


@contextmanager
def terminal() -> Iterator[Terminal]:
    """A terminal whose server lives while the block runs; skip (fail under ``CI=true``) without tmux."""
    if shutil.which("tmux") is None:
        message = "tmux is not installed (apt-get install tmux): the terminal output cannot be looked at"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    environment = {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "TMUX")}
    folder = Path(tempfile.mkdtemp(prefix="smallab-tmux-"))  # a socket's path holds at most 107 bytes
    opened = Terminal(folder / "socket", environment)
    try:
        yield opened
    finally:
        processes.run(["tmux", "-S", str(opened.socket), "kill-server"], env=environment, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
